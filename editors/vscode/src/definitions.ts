/**
 * What the editor's language features know, for codegen-lsp's prompts, and the prompt view.
 *
 * The client announces `experimental.codegenDefinitions`; the server then sends
 * `codegen/resolveDefinitions` ({textDocument, names: [{name, position}]}) and this module asks
 * VS Code's definition providers (`vscode.executeDefinitionProvider`: the TypeScript/JavaScript
 * features, Pylance, gopls, ...) where each name is defined, and answers
 * `codegen/didResolveDefinitions` with the location and the file's text from that line on
 * (the server cuts it to a head). See docs/server.md for the protocol.
 */
import * as vscode from "vscode";
import type { ClientCapabilities, FeatureState, StaticFeature } from "vscode-languageclient";
import type { LanguageClient } from "vscode-languageclient/node";

export const RESOLVE_METHOD = "codegen/resolveDefinitions";
export const RESOLVED_METHOD = "codegen/didResolveDefinitions";
export const LAST_PROMPT_METHOD = "codegen/lastPrompt";
export const PROMPT_SCHEME = "codegen-prompt";
const TEXT_LINES = 120; // lines of the definition's file sent from its line on

interface NameToResolve {
  name: string;
  position: { line: number; character: number };
}

interface ResolveParams {
  textDocument: { uri: string; version: number };
  names: NameToResolve[];
}

interface PromptPart {
  name: string;
  text: string;
  tokens: number;
}

/** Announces the feature in the client capabilities. */
export class DefinitionsFeature implements StaticFeature {
  fillClientCapabilities(capabilities: ClientCapabilities): void {
    const experimental = (capabilities.experimental ?? {}) as Record<string, unknown>;
    capabilities.experimental = { ...experimental, codegenDefinitions: true };
  }

  initialize(): void {}

  getState(): FeatureState {
    return { kind: "static" };
  }

  clear(): void {}
}

/** Answer the server's `codegen/resolveDefinitions`; call after `client.start()`. */
export function wireDefinitions(client: LanguageClient): vscode.Disposable {
  return client.onNotification(RESOLVE_METHOD, (params: ResolveParams) => {
    if (!params || !Array.isArray(params.names)) {
      return;
    }
    for (const entry of params.names) {
      void resolveOne(client, params, entry);
    }
  });
}

async function resolveOne(client: LanguageClient, params: ResolveParams, entry: NameToResolve): Promise<void> {
  let definition: Record<string, unknown> = { name: entry.name };
  try {
    const uri = client.protocol2CodeConverter.asUri(params.textDocument.uri);
    const position = new vscode.Position(entry.position.line, entry.position.character);
    const found = await vscode.commands.executeCommand<(vscode.Location | vscode.LocationLink)[]>(
      "vscode.executeDefinitionProvider",
      uri,
      position,
    );
    const first = found?.[0];
    if (first) {
      const target = "targetUri" in first ? first.targetUri : first.uri;
      const range = "targetUri" in first ? (first.targetRange ?? first.targetSelectionRange) : first.range;
      if (range) {
        const document = await vscode.workspace.openTextDocument(target);
        const last = Math.min(document.lineCount, range.start.line + TEXT_LINES);
        const text = document.getText(new vscode.Range(range.start.line, 0, last, 0));
        definition = {
          name: entry.name,
          uri: client.code2ProtocolConverter.asUri(target),
          range: client.code2ProtocolConverter.asRange(range),
          text,
        };
      }
    }
  } catch (error) {
    client.warn(`resolving ${entry.name} failed`, error);
  }
  await client.sendNotification(RESOLVED_METHOD, { textDocument: params.textDocument, definitions: [definition] });
}

/** The text of the prompt view for a `codegen/lastPrompt` result. */
export function promptText(result: { promptTokens?: number; parts?: PromptPart[] } | null): string {
  if (!result || !Array.isArray(result.parts)) {
    return "CodeGen: no prompt yet (no model request was made for this file)\n";
  }
  const out = [`CodeGen: last prompt, ${result.promptTokens ?? 0} tokens`];
  for (const part of result.parts) {
    out.push(`=== ${part.name} (${part.tokens} tokens) ===`, part.text);
  }
  return out.join("\n") + "\n";
}

/** Read-only documents `codegen-prompt:/...` holding the prompt view. */
export class PromptViews implements vscode.TextDocumentContentProvider {
  private readonly texts = new Map<string, string>();

  provideTextDocumentContent(uri: vscode.Uri): string {
    return this.texts.get(uri.toString()) ?? "";
  }

  /** Ask for the last prompt of `document` and show it beside the editor. */
  async show(client: LanguageClient, document: vscode.TextDocument): Promise<void> {
    const result = await client.sendRequest<{ promptTokens?: number; parts?: PromptPart[] } | null>(
      LAST_PROMPT_METHOD,
      { textDocument: { uri: client.code2ProtocolConverter.asUri(document.uri) } },
    );
    const uri = vscode.Uri.from({ scheme: PROMPT_SCHEME, path: `/prompt-${Date.now()}.txt` });
    this.texts.set(uri.toString(), promptText(result));
    for (const old of [...this.texts.keys()].slice(0, -8)) {
      this.texts.delete(old); // the last few views only
    }
    const view = await vscode.workspace.openTextDocument(uri);
    await vscode.window.showTextDocument(view, { preview: false, viewColumn: vscode.ViewColumn.Beside });
  }
}
