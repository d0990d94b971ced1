/**
 * The extension's view of its settings.
 *
 * `codegen.*` settings split in two: the server's own settings (sent one to one as
 * `initializationOptions.codegen` and with `workspace/didChangeConfiguration`), and a few
 * that only the extension reads (whether suggestions show, how the server is started).
 */
import * as fs from "fs";
import * as path from "path";
import * as vscode from "vscode";

/**
 * Keys of `codegen.*` settings that belong to the server, in package.json order (their
 * defaults and ranges live in package.json; tests/test_settings_schema.py checks both lists
 * against codegen_lsp/server/settings.py).
 */
export const SERVER_SETTING_KEYS = [
  "model",
  "device",
  "dtype",
  "quantize",
  "threads",
  "allowDownload",
  "cacheMemoryMB",
  "prefixReuse",
  "memoryLimitMB",
  "draftModel",
  "endpoint",
  "remoteModel",
  "apiKeyEnv",
  "requestTimeoutMs",
  "caBundle",
  "maxNewTokens",
  "temperature",
  "topP",
  "topK",
  "candidates",
  "stopSequences",
  "timeLimitMs",
  "speculation",
  "contextTokens",
  "multiline",
  "answerEarly",
  "contextFiles",
  "contextFileTokens",
  "fim",
  "header",
  "languages",
] as const;

/** Keys of `codegen.*` settings that only the extension reads. */
export const CLIENT_SETTING_KEYS = ["enable", "serverCommand", "pythonPath", "trace.server"] as const;

export const SECTION = "codegen";

export type ServerSettings = Record<string, unknown>;

/** The server's settings as the user has them now (defaults included). */
export function serverSettings(): ServerSettings {
  const config = vscode.workspace.getConfiguration(SECTION);
  const settings: ServerSettings = {};
  for (const key of SERVER_SETTING_KEYS) {
    settings[key] = config.get(key);
  }
  return settings;
}

/** Whether ghost-text suggestions are on (`codegen.enable`). */
export function suggestionsEnabled(): boolean {
  return vscode.workspace.getConfiguration(SECTION).get<boolean>("enable", true);
}

/** True when a change touches a setting that only takes effect after a restart. */
export function needsRestart(event: vscode.ConfigurationChangeEvent): boolean {
  return ["serverCommand", "pythonPath"].some((key) =>
    event.affectsConfiguration(`${SECTION}.${key}`),
  );
}

export interface ServerCommand {
  command: string;
  args: string[];
}

/**
 * How to start the server: `codegen.serverCommand` if set, else `codegen.pythonPath -m
 * codegen_lsp serve` if set, else `codegen-lsp serve` from PATH, else `python3 -m codegen_lsp serve`.
 */
export function serverCommand(): ServerCommand {
  const config = vscode.workspace.getConfiguration(SECTION);
  const explicit = config.get<string[]>("serverCommand", []);
  if (explicit.length > 0) {
    return { command: explicit[0], args: explicit.slice(1) };
  }
  const python = config.get<string>("pythonPath", "");
  if (python) {
    return { command: python, args: ["-m", "codegen_lsp", "serve"] };
  }
  const onPath = findExecutable("codegen-lsp");
  if (onPath) {
    return { command: onPath, args: ["serve"] };
  }
  const fallback = process.platform === "win32" ? "python" : "python3";
  return { command: fallback, args: ["-m", "codegen_lsp", "serve"] };
}

/** The first executable called `name` on PATH, or undefined. */
export function findExecutable(name: string): string | undefined {
  const dirs = (process.env.PATH ?? "").split(path.delimiter).filter(Boolean);
  const exts = process.platform === "win32" ? (process.env.PATHEXT ?? ".EXE").split(";") : [""];
  for (const dir of dirs) {
    for (const ext of exts) {
      const candidate = path.join(dir, name + ext);
      try {
        fs.accessSync(candidate, fs.constants.X_OK);
        if (fs.statSync(candidate).isFile()) {
          return candidate;
        }
      } catch {
        // not here: keep looking
      }
    }
  }
  return undefined;
}
