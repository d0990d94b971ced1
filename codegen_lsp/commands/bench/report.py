"""The benchmark's printed table and its target checks."""

from __future__ import annotations

from typing import Any

OURS, OURS_OFF, OURS_INT4 = "ours (reuse)", "ours (no reuse)", "ours int4 (reuse)"


def _get(data: dict[str, Any], *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def _hf(backends: dict[str, Any]) -> dict[str, Any] | None:
    return next((v for k, v in backends.items() if k.startswith("transformers")), None)


def targets(model: dict[str, Any]) -> dict[str, Any]:
    """Each target: the measured ratio or value, the limit, and whether it is met."""
    backends = model["backends"]
    ours = backends.get(OURS, {})
    out: dict[str, Any] = {}
    ct2 = _get(backends, "ctranslate2 int8", "decode_ms_per_token")
    for name, weights, suffix in (
        (OURS, model["our_weight_dtype"], ""),
        (OURS_INT4, "int4", "_int4"),
    ):
        decode = _get(backends, name, "decode_ms_per_token")
        if decode and ct2:
            out[f"decode{suffix}_vs_ctranslate2_int8"] = _check(decode / ct2, 0.35, "<=")
        bound = model["bounds_ms"].get(weights)
        if decode and bound:
            limit = 1.3 if weights == "int4" else 1.25
            out[f"decode{suffix}_vs_bandwidth_bound"] = _check(decode / bound, limit, "<=")
    hf = _hf(backends)
    ours_prefill = ours.get("prefill_tok_s", {})
    if hf:
        ratios = {
            n: ours_prefill[n] / hf["prefill_tok_s"][n]
            for n in ours_prefill
            if n in hf.get("prefill_tok_s", {})
        }
        if ratios:
            out["prefill_vs_transformers"] = {
                **_check(min(ratios.values()), 1.2, ">="),
                "by_length": ratios,
            }
        p50 = _get(ours, "replay", "summary", "p50_ms")
        hf_p50 = _get(hf, "replay", "summary", "p50_ms")
        if p50 and hf_p50:
            out["keystroke_p50_vs_transformers"] = _check(p50 / hf_p50, 0.05, "<=")
        ttft = _get(ours, "replay", "summary", "first_token_p50_ms")
        hf_ttft = _get(hf, "replay", "summary", "first_token_p50_ms")
        if ttft and hf_ttft:
            out["keystroke_first_token_p50_vs_transformers"] = _check(ttft / hf_ttft, 0.1, "<=")
    speedup = _get(model, "speculation", "speedup")
    if speedup is not None:
        out["speculation_decode_speedup"] = _check(speedup, 1.3, ">=")
    verify8 = _get(model, "verify_cost", "ratio_to_one_row", "8")
    if verify8 is not None:
        out["verify_8_rows_vs_one"] = _check(verify8, 1.3, "<=")
    busy = _get(model, "busy_neighbour", "ratio")
    if busy is not None:
        out["decode_busy_neighbour_vs_idle"] = _check(busy, 1.6, "<=")
    cold = _get(model, "user_waits", "cold_suggestion", "p50_ms")
    if cold is not None:
        out["cold_suggestion_p50_s"] = _check(cold / 1000, 1.5, "<=")
    prefilled = _get(ours, "replay", "summary", "prefilled_median")
    if prefilled is not None:
        out["median_prefilled_per_keystroke"] = _check(prefilled, 2, "<=")
    return out


def _check(value: float, limit: float, op: str) -> dict[str, Any]:
    met = value <= limit if op == "<=" else value >= limit
    return {"value": round(value, 3), "target": f"{op} {limit}", "met": met}


def _fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}"


def table(report: dict[str, Any]) -> str:
    """A plain-text table of every model and backend, then the targets."""
    lines = [
        f"read bandwidth {report['read_bandwidth_gbs']:.1f} GB/s; "
        f"machine {report['machine']['cpu']}, {report['machine']['torch_threads']} threads, "
        f"load {report['machine']['load_average']} -> {report.get('load_average_after')}"
    ]
    header = (
        f"{'backend':<24}{'pre256':>8}{'pre1024':>8}{'pre1900':>8}{'dec ms':>8}"
        f"{'key p50':>9}{'key p95':>9}{'1st p50':>9}{'prefill':>8}{'n':>5}"
    )
    for name, model in report["models"].items():
        if "skipped" in model:
            lines.append(f"\n{name}: skipped ({model['skipped']})")
            continue
        lines.append(f"\n{name}: {model['engine']}")
        bounds = ", ".join(f"{k} {v:.1f}" for k, v in model["bounds_ms"].items())
        lines.append(f"decode lower bound at ctx {_decode_ctx(model)} (ms): {bounds}")
        lines.append("prefill in tok/s; decode ms/token; keystroke ms (suggestion, 1st token)")
        lines.append(header)
        for backend, data in model["backends"].items():
            tok_s = data.get("prefill_tok_s", {})
            summary = _get(data, "replay", "summary") or {}
            lines.append(
                f"{backend:<24}{_fmt(tok_s.get('256')):>8}{_fmt(tok_s.get('1024')):>8}"
                f"{_fmt(tok_s.get('1900')):>8}{_fmt(data.get('decode_ms_per_token'), 1):>8}"
                f"{_fmt(summary.get('p50_ms')):>9}{_fmt(summary.get('p95_ms')):>9}"
                f"{_fmt(summary.get('first_token_p50_ms')):>9}"
                f"{_fmt(summary.get('prefilled_median'), 1):>8}{summary.get('keystrokes', 0):>5}"
            )
        lines.extend(_speed_lines(model))
        for target, check in model.get("targets", {}).items():
            mark = "met" if check["met"] else "NOT met"
            lines.append(f"  target {target}: {check['value']} ({check['target']}) {mark}")
    return "\n".join(lines)


def _decode_ctx(model: dict[str, Any]) -> Any:
    return next(
        (b.get("decode_context") for b in model["backends"].values() if "decode_context" in b),
        "?",
    )


def _speed_lines(model: dict[str, Any]) -> list[str]:
    """Speculation, verify cost and the suggestion-service waits, where measured."""
    lines = []
    spec = model.get("speculation")
    if spec:
        tok_s = spec["decode_tok_s"]
        lines.append(
            f"speculation ({spec['positions']} cursors, {spec['new_tokens']} tokens): decode "
            f"{tok_s['off']:.0f} -> {tok_s['lookup']:.0f} tok/s ({spec['speedup']:.2f}x), "
            f"{spec['acceptance']:.0%} of {spec['drafted']} drafts kept, "
            f"{spec['tokens_per_forward']:.2f} tokens/forward, "
            f"{spec['text_mismatches']} texts differ"
        )
    replay = model.get("context_replay")
    if replay:
        for name in ("contextFiles=0", "contextFiles=2", "text after the cursor"):
            r = replay.get(name)
            if r is None:
                continue
            lines.append(
                f"typing {replay['keystrokes']} chars, {name}: {r['model_runs']} "
                f"model runs ({r['type_ahead']} type-ahead), prefilled median "
                f"{r['prefilled_median']} mean {_fmt(r['prefilled_mean'], 1)}, prompt "
                f"{r['prompt_tokens_median']} tokens, p50 {_fmt(r['p50_ms'])} ms"
            )
    kernels = model.get("kernel_rates")
    if kernels:
        rates = ", ".join(
            f"{k} {v['ms']:.1f} ms ({v['gbs']:.1f} GB/s)"
            for k, v in kernels.items()
            if isinstance(v, dict)
        )
        lines.append(f"decode kernels alone at ctx {kernels['context']}: {rates}")
        int4 = kernels.get("floor_int4_ms")
        lines.append(
            f"kernel floor per decode step: int8 {kernels['floor_int8_ms']:.1f} ms"
            + (f", int4 {int4:.1f} ms" if int4 is not None else "")
        )
    verify = model.get("verify_cost")
    if verify:
        ratios = ", ".join(f"{w} rows {r:.2f}x" for w, r in verify["ratio_to_one_row"].items())
        lines.append(f"verify call vs one-token step at ctx {verify['context']}: {ratios}")
    if model.get("kv_cache"):
        lines.append(kv_table("KV cache", model["kv_cache"]))
    busy = model.get("busy_neighbour")
    if busy:
        lines.append(
            f"decode step at ctx {busy['context']}, {busy['threads']} threads: idle "
            f"{busy['idle_ms']:.1f} ms, with a process spinning on one core {busy['busy_ms']:.1f} "
            f"ms ({busy['ratio']:.2f}x; max {busy['busy_max_ms']:.0f} ms)"
            + _team_line(busy.get("busy_team"))
        )
    waits = model.get("user_waits") or {}
    for label, key in (
        ("cold suggestion (default settings: coldStartMs, first line)", "cold_suggestion"),
        ("the same cursor after the background prefill", "after_background"),
        (
            "cold suggestion, whole prompt (coldStartMs 0, first line)",
            "cold_suggestion_full_prompt",
        ),
        ("cold suggestion, whole prompt, whole answer", "cold_suggestion_whole"),
        ("function body", "function_body"),
    ):
        data = waits.get(key) or {}
        if data.get("count"):
            lines.append(
                f"{label}: p50 {data['p50_ms']:.0f} ms, max {data['max_ms']:.0f} ms, "
                f"{data['mean_tokens']:.1f} tokens shown on average ({data['count']} runs)"
            )
    return lines


def _team_line(team: dict | None) -> str:
    if not team:
        return ""
    return (
        f"; beside it the kernels ran {team['sharedCalls']} calls shared with helper threads, "
        f"{team['aloneCalls']} alone, {team['stalls']} stalls"
    )


def kv_table(name: str, data: dict[str, Any]) -> str:
    """A few lines for the bench table."""
    lines = [
        f"{name}: KV cache dtype, {data['steps']} teacher-forced steps after {data['context']} "
        f"tokens of {data['text']}"
    ]
    for dtype, row in data["dtypes"].items():
        lines.append(
            f"  {dtype:9s} top-1 agreement with float32 {row['top1_agreement']:6.1%}, step "
            f"{row['step_ms']:.1f} ms ({row['ratio_to_float32']:.2f}x float32)"
        )
    return "\n".join(lines)
