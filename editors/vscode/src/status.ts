/**
 * The status bar item: loading / ready / generating / error, from the server's
 * `codegen/status` notifications and its `$/progress` reports during model load.
 */
import * as vscode from "vscode";

/** States the server reports in `codegen/status`, plus the extension's own. */
export type State = "starting" | "loading" | "ready" | "generating" | "error" | "stopped";

/** Params of the `codegen/status` notification and result of the `codegen/status` request. */
export interface StatusParams {
  state: "loading" | "ready" | "generating" | "error";
  message?: string;
}

const ICONS: Record<State, string> = {
  starting: "$(loading~spin)",
  loading: "$(loading~spin)",
  ready: "$(check)",
  generating: "$(sync~spin)",
  error: "$(error)",
  stopped: "$(circle-slash)",
};

export class StatusBar implements vscode.Disposable {
  private readonly item: vscode.StatusBarItem;
  private state: State = "starting";
  private message = "";
  private progress = "";
  private enabled = true;

  constructor(command: string) {
    this.item = vscode.window.createStatusBarItem("codegen.status", vscode.StatusBarAlignment.Right, 100);
    this.item.name = "CodeGen";
    this.item.command = command;
    this.render();
    this.item.show();
  }

  /** The state shown now (tests and commands read it). */
  get current(): State {
    return this.state;
  }

  /** Show a new state; `message` goes to the tooltip. */
  set(state: State, message = ""): void {
    this.state = state;
    this.message = message;
    if (state !== "loading") {
      this.progress = "";
    }
    this.render();
  }

  /** Apply a `codegen/status` notification or request result. */
  fromServer(params: StatusParams): void {
    this.set(params.state, params.message ?? "");
  }

  /** Apply a `$/progress` report of the model load. */
  fromProgress(value: { kind: string; title?: string; message?: string; percentage?: number }): void {
    if (value.kind === "end") {
      this.progress = "";
      this.render();
      return;
    }
    const parts = [value.title, value.message].filter(Boolean);
    if (value.percentage !== undefined) {
      parts.push(`${Math.round(value.percentage)}%`);
    }
    this.state = this.state === "ready" ? "ready" : "loading";
    this.progress = parts.join(" ");
    this.render();
  }

  /** Show whether ghost-text suggestions are switched on. */
  setEnabled(enabled: boolean): void {
    this.enabled = enabled;
    this.render();
  }

  private render(): void {
    const off = this.enabled ? "" : " (off)";
    const detail = this.state === "loading" && this.progress ? ` ${this.progress}` : "";
    this.item.text = `${ICONS[this.state]} CodeGen: ${this.state}${off}`;
    const lines = [`CodeGen: ${this.state}${detail}`];
    if (this.message) {
      lines.push(this.message);
    }
    if (!this.enabled) {
      lines.push("Suggestions are off (CodeGen: Toggle Suggestions).");
    }
    lines.push("Click to show the server log.");
    this.item.tooltip = lines.join("\n");
    this.item.backgroundColor =
      this.state === "error" ? new vscode.ThemeColor("statusBarItem.errorBackground") : undefined;
  }

  dispose(): void {
    this.item.dispose();
  }
}
