/**
 * Composition root: builds the status bar, the language client and the commands, and hands
 * every disposable to `context.subscriptions`. Prompting, caching and post-processing live
 * in the server; this extension starts it, forwards settings and shows its state.
 */
import * as vscode from "vscode";
import { State, type LanguageClient } from "vscode-languageclient/node";
import { STATUS_METHOD, createClient, generateFunction, sendSettings, wireStatus } from "./client";
import { PROMPT_SCHEME, PromptViews, wireDefinitions } from "./definitions";
import { SECTION, needsRestart, suggestionsEnabled } from "./settings";
import { StatusBar } from "./status";

export const COMMANDS = {
  toggle: "codegen.toggle",
  generateFunction: "codegen.generateFunctionAtCursor",
  showLog: "codegen.showLog",
  restart: "codegen.restartServer",
  showStatus: "codegen.showStatus",
  showPrompt: "codegen.showPrompt",
} as const;

/** Owns the running client; `restart` replaces it. */
class Session implements vscode.Disposable {
  private client: LanguageClient | undefined;
  private wiring: vscode.Disposable[] = [];

  constructor(
    private readonly output: vscode.LogOutputChannel,
    private readonly status: StatusBar,
  ) {}

  get running(): LanguageClient | undefined {
    return this.client?.isRunning() ? this.client : undefined;
  }

  async start(): Promise<void> {
    this.status.set("starting");
    const client = createClient(this.output);
    this.client = client;
    try {
      await client.start();
    } catch (error) {
      this.status.set("error", `The server did not start: ${describe(error)}`);
      this.output.error(`Server start failed: ${describe(error)}`);
      return;
    }
    this.wiring = [
      ...wireStatus(client, this.status),
      wireDefinitions(client),
      client.onDidChangeState((event) => {
        if (event.newState === State.Stopped && this.client === client) {
          this.status.set("stopped", "The server stopped; run CodeGen: Restart Server.");
        }
      }),
    ];
  }

  async stop(): Promise<void> {
    this.wiring.forEach((d) => d.dispose());
    this.wiring = [];
    const client = this.client;
    this.client = undefined;
    if (client?.needsStop()) {
      await client.dispose(); // stops the server, then drops the client's providers
    }
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }

  dispose(): void {
    void this.stop();
  }
}

let session: Session | undefined;

/** Run a command on the active editor with the running client; say why when there is none,
 * and say what failed (``what``) when it throws. */
async function withEditor(
  what: string,
  run: (client: LanguageClient, editor: vscode.TextEditor) => Promise<unknown>,
): Promise<void> {
  const editor = vscode.window.activeTextEditor;
  const client = session?.running;
  if (!editor || !client) {
    void vscode.window.showWarningMessage("CodeGen: no editor, or the server is not running.");
    return;
  }
  try {
    await run(client, editor);
  } catch (error) {
    void vscode.window.showErrorMessage(`CodeGen: ${what} failed: ${describe(error)}`);
  }
}

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  const output = vscode.window.createOutputChannel("CodeGen", { log: true });
  const status = new StatusBar(COMMANDS.showLog);
  status.setEnabled(suggestionsEnabled());
  session = new Session(output, status);
  const prompts = new PromptViews();
  context.subscriptions.push(output, status, session);
  context.subscriptions.push(vscode.workspace.registerTextDocumentContentProvider(PROMPT_SCHEME, prompts));

  context.subscriptions.push(
    vscode.commands.registerCommand(COMMANDS.toggle, async () => {
      const config = vscode.workspace.getConfiguration(SECTION);
      await config.update("enable", !suggestionsEnabled(), vscode.ConfigurationTarget.Global);
    }),
    vscode.commands.registerCommand(COMMANDS.showLog, () => output.show(true)),
    vscode.commands.registerCommand(COMMANDS.restart, () => session?.restart()),
    vscode.commands.registerCommand(COMMANDS.showStatus, async () => {
      const client = session?.running;
      if (!client) {
        void vscode.window.showWarningMessage("CodeGen: the server is not running.");
        return;
      }
      const st = await client.sendRequest<Record<string, unknown>>(STATUS_METHOD, {});
      void vscode.window.showInformationMessage(
        `CodeGen: ${String(st.state)} (${String(st.message)}); model runs ${String(st.generateRuns)}, ` +
          `shown ${String(st.shown)}, accepted ${String(st.accepted)}, ` +
          `partly accepted ${String(st.partlyAccepted)}, from type-ahead ${String(st.typeAhead)}`,
      );
    }),
    vscode.commands.registerCommand(COMMANDS.showPrompt, () =>
      withEditor("showing the prompt", (client, editor) => prompts.show(client, editor.document)),
    ),
    vscode.commands.registerCommand(COMMANDS.generateFunction, () =>
      withEditor("generating the function", (client, editor) =>
        generateFunction(client, editor.document, editor.selection.active),
      ),
    ),
    vscode.workspace.onDidChangeConfiguration(async (event) => {
      if (!event.affectsConfiguration(SECTION)) {
        return;
      }
      status.setEnabled(suggestionsEnabled());
      if (needsRestart(event)) {
        await session?.restart();
        return;
      }
      const client = session?.running;
      if (client) {
        await sendSettings(client);
      }
    }),
  );

  void session.start();
}

export async function deactivate(): Promise<void> {
  await session?.stop();
  session = undefined;
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
