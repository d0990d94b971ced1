// Drives VS Code (code-server) in headless Chromium with playwright-core, as a user would:
// wait for the CodeGen status bar item to say "ready", open a file with Quick Open, type,
// wait for ghost text, accept it with Tab, save, optionally run a command from the palette.
//
// Usage: node vscode_driver.js '<json>'  with
//   { playwright, chromium, url, file, typeAtEnd, screenshots, readyTimeoutMs,
//     suggestionTimeoutMs, earlyType?, serverLog?, generate?: { file, before, line, command },
//     prompt?: { typeMore, expect, tries }, hiddenFirst?, manualOnly? }
// (prompt: after the ghost text, type one more character of `typeMore` at a time and run
// "CodeGen: Show Prompt" until the view holds `expect`; its text is reported as promptView,
// and nothing is accepted.)
// (earlyType: type without waiting for "ready" first; serverLog: the server's --log-file,
// to accept one word first and count the model runs it logged before and after;
// hiddenFirst: before typing, type this text at the end of the file (an automatic request, as
// while typing), wait for the server to log its model run, and report the ghost text then
// shown, as hiddenGhost;
// manualOnly: after typing, wait 3 s and report { ghost, runs } as typedOnly (with
// codegen.autoTrigger false: no ghost text, no model run), then ask with the command.)
// Prints one JSON line: { statusTexts, ghostText, steps: [{ step, ms }], typedStatus,
// hiddenGhost }, or
// exits 1 with
// the error (and leaves screenshots in `screenshots`).
"use strict";

const fs = require("fs");
const path = require("path");

const args = JSON.parse(process.argv[2]);
const { chromium } = require(args.playwright);

const STATUS = ".statusbar-item";
const steps = [];
const started = Date.now();

function step(name) {
  steps.push({ step: name, ms: Date.now() - started });
}

async function statusText(page) {
  const item = page.locator(STATUS, { hasText: "CodeGen" }).first();
  return (await item.count()) ? (await item.innerText()).trim() : "";
}

async function openFile(page, quickInput, file) {
  await page.keyboard.press("Escape");
  await page.keyboard.press("Control+P");
  await quickInput.waitFor({ timeout: 10000 });
  await quickInput.fill(path.basename(file));
  await page.locator(".quick-input-list .monaco-list-row", { hasText: path.basename(file) })
    .first()
    .waitFor({ timeout: 10000 });
  await page.keyboard.press("Enter");
  await page.locator(".tab.active", { hasText: path.basename(file) }).waitFor({ timeout: 10000 });
  await page.locator(".editor-instance .monaco-editor.focused").waitFor({ timeout: 10000 });
}

async function runCommand(page, quickInput, title) {
  await page.keyboard.press("Control+Shift+P");
  await quickInput.waitFor({ timeout: 10000 });
  await quickInput.fill(">" + title);
  await page.locator(".quick-input-list .monaco-list-row", { hasText: title })
    .first()
    .waitFor({ timeout: 10000 });
  await page.keyboard.press("Enter");
}

async function main() {
  const browser = await chromium.launch({
    executablePath: args.chromium,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
    ],
  });
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  const statusTexts = [];
  let ghostText = "";
  let typedStatus = "";
  let wordAccept = null;
  let promptView = "";
  let hiddenGhost = null;
  let typedOnly = null;
  let watching = true;
  let watcher = Promise.resolve();
  try {
    await page.goto(args.url);
    await page.locator(".monaco-workbench").waitFor({ timeout: 60000 });
    step("workbench");

    // Every status text the item shows, until the end.
    watcher = (async () => {
      while (watching) {
        const text = await statusText(page).catch(() => "");
        if (text && text !== statusTexts[statusTexts.length - 1]) {
          statusTexts.push(text);
        }
        await page.waitForTimeout(100).catch(() => {});
      }
    })();

    if (!args.earlyType) {
      await page
        .locator(STATUS, { hasText: "CodeGen: ready" })
        .first()
        .waitFor({ timeout: args.readyTimeoutMs });
      step("status ready");
    }

    const quickInput = page.locator(".quick-input-widget input");
    await openFile(page, quickInput, args.file);
    step("file open");

    // Type at the end of the file, like a person.
    const editor = page.locator(".editor-instance .monaco-editor").first();
    await editor.locator(".view-lines").click();
    await page.keyboard.press("Control+End");
    if (args.hiddenFirst) {
      // Type the file's last characters: VS Code asks (automatically, as while typing), the
      // model runs (the server logs it) and the gate decides: what ghost text is there a
      // second after the run ended?
      const runs = () => (fs.readFileSync(args.serverLog, "utf8").match(/ suggestions=/g) || []).length;
      const before = runs();
      await page.keyboard.type(args.hiddenFirst, { delay: 60 });
      const until = Date.now() + args.suggestionTimeoutMs;
      while (runs() === before && Date.now() < until) {
        await page.waitForTimeout(100);
      }
      await page.waitForTimeout(1500);
      hiddenGhost = (await page.locator(".ghost-text-decoration, .ghost-text").allInnerTexts())
        .join("\n")
        .replace(/\u00a0/g, " ");
      hiddenGhost = runs() === before ? null : hiddenGhost; // null: the model never ran
      step("asked at the end of the file");
      await page.screenshot({ path: path.join(args.screenshots, "hidden.png") });
    }
    await page.keyboard.type(args.typeAtEnd, { delay: 40 });
    step("typed");
    if (args.manualOnly) {
      await page.waitForTimeout(3000);
      const ghost = (await page.locator(".ghost-text-decoration, .ghost-text").allInnerTexts()).join("\n");
      const runs = (fs.readFileSync(args.serverLog, "utf8").match(/ suggestions=/g) || []).length;
      typedOnly = { ghost, runs };
      await runCommand(page, quickInput, "Trigger Inline Suggestion");
      step("asked");
    }
    // the item is re-rendered as its text changes: read it again while it is between texts
    for (let tries = 0; tries < 20 && !typedStatus; tries++) {
      typedStatus = await statusText(page).catch(() => "");
      if (!typedStatus) await page.waitForTimeout(100);
    }
    // a suggestion that starts with a line break has only ghost lines (.ghost-text)
    await page.locator(".ghost-text-decoration, .ghost-text").first().waitFor({ timeout: args.suggestionTimeoutMs });
    ghostText = (await page.locator(".ghost-text-decoration, .ghost-text").allInnerTexts())
      .join("\n")
      .replace(/\u00a0/g, " ");
    step("ghost text");
    await page.screenshot({ path: path.join(args.screenshots, "ghost.png") });

    if (args.prompt) {
      for (let attempt = 0; attempt < args.prompt.tries && !promptView.includes(args.prompt.expect); attempt++) {
        await page.locator(".tab", { hasText: path.basename(args.file) }).first().click();
        await page.locator(".editor-instance .monaco-editor.focused").waitFor({ timeout: 10000 });
        await page.keyboard.press("Control+End");
        await page.keyboard.type(args.prompt.typeMore[attempt % args.prompt.typeMore.length]);
        await page.waitForTimeout(1500);
        await runCommand(page, quickInput, "CodeGen: Show Prompt");
        await page.locator(".tab.active", { hasText: "prompt-" }).waitFor({ timeout: 10000 });
        const view = page.locator(".editor-instance .monaco-editor.focused .view-lines").first();
        await view.waitFor({ timeout: 10000 });
        await page.waitForTimeout(300);
        promptView = (await view.innerText()).replace(/\u00a0/g, " ");
        step(`prompt view ${attempt + 1}`);
      }
      await page.screenshot({ path: path.join(args.screenshots, "prompt.png") });
      return;
    }

    if (args.serverLog && !args.hiddenFirst && !args.manualOnly) {
      // Accept one word (VS Code's Ctrl+Right): the rest must stay, with no model run.
      const runs = () => (fs.readFileSync(args.serverLog, "utf8").match(/ suggestions=/g) || []).length;
      const runsBefore = runs();
      // Ctrl+Right takes the next word (a leading space alone counts as one: press again).
      let ghostAfter = "";
      for (let press = 0; press < 3 && (!ghostAfter || ghostAfter.trim() === ghostText.trim()); press++) {
        await page.keyboard.press("Control+ArrowRight");
        const until = Date.now() + 5000;
        while (Date.now() < until) {
          ghostAfter = (await page.locator(".ghost-text-decoration, .ghost-text").allInnerTexts())
            .join("\n")
            .replace(/\u00a0/g, " ");
          if (ghostAfter && ghostAfter !== ghostText) {
            break;
          }
          await page.waitForTimeout(100);
        }
      }
      step("accepted a word");
      await page.waitForTimeout(1000);
      wordAccept = { ghostAfter, runsBefore, runsAfter: runs() };
      step("rest shown");
    }

    await page.keyboard.press("Tab");
    await page.keyboard.press("Escape"); // hide a next suggestion, if one came at once
    await page.keyboard.press("Control+S");
    await page.locator(".tab.active.dirty").waitFor({ state: "detached", timeout: 10000 });
    step("accepted and saved");

    if (args.generate) {
      await openFile(page, quickInput, args.generate.file);
      await page.keyboard.press("Control+G");
      await quickInput.waitFor({ timeout: 10000 });
      await quickInput.fill(":" + args.generate.line);
      await page.keyboard.press("Enter");
      await runCommand(page, quickInput, args.generate.command);
      step("command run");
      // VS Code saves files that a workspace edit changed (files.refactoring.autoSave);
      // with that off, the tab turns dirty and we save.
      const before = args.generate.before;
      const deadline = Date.now() + args.suggestionTimeoutMs;
      while (fs.readFileSync(args.generate.file, "utf8") === before) {
        if (await page.locator(".tab.active.dirty").count()) {
          await page.keyboard.press("Control+S");
          await page.locator(".tab.active.dirty").waitFor({ state: "detached", timeout: 10000 });
        } else if (Date.now() > deadline) {
          throw new Error(`${args.generate.command} did not change ${args.generate.file}`);
        } else {
          await page.waitForTimeout(100);
        }
      }
      step("command edit saved");
    }
    await page.screenshot({ path: path.join(args.screenshots, "done.png") });
  } catch (error) {
    await page.screenshot({ path: path.join(args.screenshots, "failure.png") }).catch(() => {});
    throw error;
  } finally {
    watching = false;
    await watcher;
    console.log(JSON.stringify({ statusTexts, ghostText, steps, typedStatus, wordAccept, promptView, hiddenGhost, typedOnly }));
    await browser.close();
  }
}

main().catch((error) => {
  console.error(error && error.stack ? error.stack : String(error));
  process.exit(1);
});
