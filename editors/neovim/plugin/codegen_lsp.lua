-- codegen-lsp user commands. The plugin does nothing until require("codegen_lsp").setup().
if vim.g.loaded_codegen_lsp then
  return
end
vim.g.loaded_codegen_lsp = true

local function codegen()
  local m = require("codegen_lsp")
  if not m.is_setup() then
    m.setup({})
  end
  return m
end

vim.api.nvim_create_user_command("CodegenToggle", function()
  codegen().toggle()
end, { desc = "codegen-lsp: switch ghost-text suggestions on or off" })

vim.api.nvim_create_user_command("CodegenGenerateFunction", function()
  codegen().generate_function()
end, { desc = "codegen-lsp: generate the body of the function at the cursor" })

vim.api.nvim_create_user_command("CodegenStatus", function()
  codegen().show_status()
end, { desc = "codegen-lsp: show whether the model is loaded" })

vim.api.nvim_create_user_command("CodegenShowPrompt", function()
  codegen()
  require("codegen_lsp.definitions").show_prompt()
end, { desc = "codegen-lsp: show the last prompt by part (definitions, snippets, window, ...)" })
