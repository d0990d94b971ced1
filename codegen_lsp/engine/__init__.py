"""The engine: token ids in, continuations out, reusing the KV cache across keystrokes."""
