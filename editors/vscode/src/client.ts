/**
 * The language client for `codegen-lsp serve`: how it is started, what it is told, and how
 * its status reaches the status bar.
 *
 * vscode-languageclient 11 wires LSP 3.18 `textDocument/inlineCompletion` itself
 * (InlineCompletionItemFeature: it forwards VS Code's CancellationToken as
 * `$/cancelRequest`); this module only gates it behind `codegen.enable` and, while typing,
 * `codegen.autoTrigger`.
 */
import * as vscode from "vscode";
import {
  DidChangeConfigurationNotification,
  ExecuteCommandRequest,
  WorkDoneProgress,
  WorkDoneProgressCreateRequest,
} from "vscode-languageclient";
import type { LanguageClientOptions, ServerOptions } from "vscode-languageclient/node";
import { LanguageClient, TransportKind } from "vscode-languageclient/node";
import { DefinitionsFeature } from "./definitions";
import { SECTION, mayAsk, serverCommand, serverSettings, suggestionsEnabled } from "./settings";
import type { StatusBar, StatusParams } from "./status";

export const CLIENT_ID = "codegen";
export const STATUS_METHOD = "codegen/status";
export const GENERATE_FUNCTION_COMMAND = "codegen.generateFunction";

/** Create (not start) the client for the current settings. */
export function createClient(output: vscode.LogOutputChannel): LanguageClient {
  const { command, args } = serverCommand();
  output.info(`Server command: ${[command, ...args].join(" ")}`);
  const serverOptions: ServerOptions = { command, args, transport: TransportKind.stdio };
  const clientOptions: LanguageClientOptions = {
    // Every document: the server decides per language (`codegen.languages`).
    documentSelector: [{ scheme: "file" }, { scheme: "untitled" }],
    outputChannel: output,
    initializationOptions: () => ({ [SECTION]: serverSettings() }),
    middleware: {
      provideInlineCompletionItems: (document, position, context, token, next) =>
        suggestionsEnabled() && mayAsk(document, context) ? next(document, position, context, token) : null,
      workspace: {
        // A server that pulls `codegen` gets the server settings only, not the client's.
        configuration: async (params, token, next) => {
          const result = await next(params, token);
          if (!Array.isArray(result)) {
            return result;
          }
          return params.items.map((item, i) => (item.section === SECTION ? serverSettings() : result[i]));
        },
      },
    },
  };
  const client = new LanguageClient(CLIENT_ID, "CodeGen", serverOptions, clientOptions);
  client.registerFeature(new DefinitionsFeature()); // experimental.codegenDefinitions
  return client;
}

/**
 * Route the server's status to the status bar: `codegen/status` notifications, an initial
 * `codegen/status` request, and the `$/progress` of work-done tokens the server creates.
 * Call after `client.start()` resolved.
 */
export function wireStatus(client: LanguageClient, status: StatusBar): vscode.Disposable[] {
  const disposables: vscode.Disposable[] = [
    client.onNotification(STATUS_METHOD, (params: StatusParams) => {
      const wasReady = status.current === "ready" || status.current === "generating";
      status.fromServer(params);
      if (params.state === "ready" && !wasReady) {
        askAgainWhenReady();
      }
    }),
    client.onRequest(WorkDoneProgressCreateRequest.type, ({ token }) => {
      const listener = client.onProgress(WorkDoneProgress.type, token, (value) => {
        status.fromProgress(value);
        if (value.kind === "end") {
          listener.dispose();
        }
      });
    }),
  ];
  client.sendRequest<StatusParams>(STATUS_METHOD, {}).then(
    (params) => {
      // A notification that came in meanwhile is newer than this answer.
      if (status.current === "starting") {
        status.fromServer(params);
      }
    },
    (error: unknown) => client.warn(`${STATUS_METHOD} request failed`, error),
  );
  return disposables;
}

/**
 * The model became ready: a user who typed while it loaded (before the server could answer,
 * or while it answered empty) gets a suggestion now, without typing again.
 */
function askAgainWhenReady(): void {
  if (vscode.window.activeTextEditor) {
    void vscode.commands.executeCommand("editor.action.inlineSuggest.trigger");
  }
}

/** Send the server settings after a change of `codegen.*`. */
export function sendSettings(client: LanguageClient): Promise<void> {
  return client.sendNotification(DidChangeConfigurationNotification.type, {
    settings: { [SECTION]: serverSettings() },
  });
}

/** Ask the server to generate the body of the function at `position` (it applies the edit). */
export async function generateFunction(
  client: LanguageClient,
  document: vscode.TextDocument,
  position: vscode.Position,
): Promise<unknown> {
  return client.sendRequest(ExecuteCommandRequest.type, {
    command: GENERATE_FUNCTION_COMMAND,
    arguments: [
      client.code2ProtocolConverter.asUri(document.uri),
      client.code2ProtocolConverter.asPosition(position),
    ],
  });
}
