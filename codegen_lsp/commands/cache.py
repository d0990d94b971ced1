"""``codegen-lsp cache``: the quantized-weight cache's entries, listed or removed.

``list`` shows each entry (key, size, source checkpoint, format, last use; ``--verify`` reads
every byte against its CRC-32); ``clear`` removes all entries, or those whose key starts with
the given prefix. The folder is ``$CODEGEN_WEIGHT_CACHE_DIR`` or the user's cache folder (see
``codegen_lsp/engine/weight_cache.py``). Imports no torch: it only reads files.
"""

from __future__ import annotations

import argparse
import sys
import time

from codegen_lsp.engine.weight_files import (
    CorruptEntry,
    Entry,
    cache_root,
    check,
    list_entries,
    remove_entry,
)

HELP = (
    "List or clear the cache of quantized weights that makes a second start of a model fast "
    "(CODEGEN_WEIGHT_CACHE=0 turns it off; CODEGEN_WEIGHT_CACHE_DIR moves it)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``codegen-lsp cache``."""
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = sub.add_parser("list", help="show the entries: size, source, format, last use")
    listing.add_argument(
        "--verify", action="store_true", help="read every entry whole and check its CRC-32"
    )
    clear = sub.add_parser("clear", help="remove all entries, or the one whose key is given")
    clear.add_argument("key", nargs="?", default="", help="an entry's key (or its first chars)")


def describe(entry: Entry) -> str:
    """One line for ``list``."""
    fmt = entry.info.get("format") or {}
    what = f"{fmt.get('quantize', '?')} {fmt.get('dtype', '?')}"
    if fmt.get("packed") not in (None, "any"):
        what += f" ({fmt['packed']} layout)"
    used = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.last_use))
    size = f"{entry.size / 2**20:,.0f} MiB"
    return f"{entry.key}  {size:>10}  {what:<24}  last used {used}  {entry.source}"


def run(args: argparse.Namespace) -> int:
    """List or clear; 1 when ``clear KEY`` matches nothing or ``--verify`` finds a bad entry."""
    root = cache_root()
    entries = list_entries(root)
    if args.action == "list":
        print(f"{root}: {len(entries)} entr{'y' if len(entries) == 1 else 'ies'}")
        bad = 0
        for entry in entries:
            line = describe(entry)
            if args.verify:
                try:
                    check(entry.data, entry.info, full=True)
                    line += "  [ok]"
                except (CorruptEntry, OSError, KeyError, TypeError) as exc:
                    line += f"  [bad: {exc}]"
                    bad += 1
            print(line)
        return 1 if bad else 0
    chosen = [e for e in entries if e.key.startswith(args.key)]
    if args.key and not chosen:
        print(f"codegen-lsp cache: no entry {args.key!r} in {root}", file=sys.stderr)
        return 1
    removed = sum(remove_entry(root, e.key) for e in chosen)
    print(f"removed {removed} entr{'y' if removed == 1 else 'ies'} from {root}")
    return 0
