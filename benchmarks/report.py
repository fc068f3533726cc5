"""Run the benchmark suite and write its markdown table of speedup ratios (peer time / fused time).

    python -m benchmarks.report                       # default suite, this machine
    python -m benchmarks.report --full                # full sweeps (extra arguments go to pytest)
    python -m benchmarks.report --from-json FILE      # only re-render a saved run
    python -m benchmarks.report --check               # only say which gdram_ext the suite would time

The suite's pytest-benchmark JSON is saved (``--json``, default ``benchmarks/results-<host>.json``)
with the load average before and after the run; the table goes to stdout and to ``--output``
(default ``benchmarks/results-<host>.md``). A ratio above 1 means the fused op is that many times
faster than the peer on the same case and device, both measured in the same run. The retina's tables
come first; the box op's (``benchmarks/test_bench_boxes.py``: its targets over TNet's grid, forward,
forward + backward and memory) follow under "Box glimpse benchmarks".

The report refuses to run the suite, or to render a run, unless ``gdram_ext`` ran its compiled
kernels (``gdram_ext.backend().name == "compiled"``); the backend, its kernels and the commit of the
checkout are recorded in the JSON and printed in the markdown header.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path

from benchmarks import box_cases
from benchmarks.cases import CHANNELS_LAST, CONTIGUOUS, FUSED, FUSED_COMPILED, headline
from benchmarks.harness import FULL_ENV, THREADS_ENV, backend_info, require_compiled

ROOT = Path(__file__).resolve().parent.parent
PEER_COLUMNS = (
    ("naive_crop", "1 naive crop"),
    ("grid_sample_per_scale", "2 grid_sample per scale"),
    ("grid_sample_vectorised", "3 grid_sample vectorised"),
    ("coverage_einsum", "3 coverage einsum (area)"),
    ("roi_align", "4 roi_align"),
    (FUSED_COMPILED, "5 fused, torch.compile"),
)
SECTIONS = (
    ("fwd", "Forward"),
    ("fwdbwd", "Forward + backward"),
    ("train-gdram", "End to end: GDRAM training step"),
    ("infer-gdram", "End to end: GDRAM batch-1 inference"),
    ("infer-fgdram", "End to end: F-GDRAM batch-1 inference"),
)
CASE_ORDER = ("height", "num_scales", "size")


@dataclass(frozen=True)
class Target:
    """An issue target: on ``group``, the fused op is ``threshold`` times faster than ``peer`` or more
    (``strict``: more than ``threshold``)."""

    label: str
    group: str
    peer: str
    threshold: float
    strict: bool = False


_BILINEAR, _AREA = headline("bilinear"), headline("area")
TARGETS = (
    Target("CPU forward, bilinear: >= 5x peer 2", _BILINEAR.group("fwd", "cpu"), "grid_sample_per_scale", 5),
    Target(
        "CPU forward, bilinear, batch 512: >= 5x peer 2",
        replace(_BILINEAR, batch=512).group("fwd", "cpu"),
        "grid_sample_per_scale",
        5,
    ),
    Target("CPU forward, bilinear: >= 20x peer 1", _BILINEAR.group("fwd", "cpu"), "naive_crop", 20),
    Target(
        "CPU forward+backward, bilinear: >= 3x peer 2", _BILINEAR.group("fwdbwd", "cpu"), "grid_sample_per_scale", 3
    ),
    Target("GPU forward, bilinear: >= 10x peer 2", _BILINEAR.group("fwd", "cuda"), "grid_sample_per_scale", 10),
    Target("GPU forward, bilinear: faster than peer 4", _BILINEAR.group("fwd", "cuda"), "roi_align", 1, strict=True),
    Target("GPU forward, area: faster than peer 4", _AREA.group("fwd", "cuda"), "roi_align", 1, strict=True),
    Target("GPU training step: >= 2x with peer 2", "train-gdram-B128-T8-128x128-cuda", "grid_sample_per_scale", 2),
)


@dataclass(frozen=True)
class FusedTarget:
    """An issue target on the fused op alone: its time on ``group`` is at most ``limit`` times its time
    on ``baseline`` (another case, same device)."""

    label: str
    group: str
    baseline: str
    limit: float


FUSED_TARGETS = (
    FusedTarget(
        "CPU area forward+backward: <= 3x bilinear forward+backward",
        _AREA.group("fwdbwd", "cpu"),
        _BILINEAR.group("fwdbwd", "cpu"),
        3,
    ),
    *(
        FusedTarget(
            f"CPU {case.mode} forward: channels_last <= 1.5x NCHW",
            replace(case, layout=CHANNELS_LAST).group("fwd", "cpu"),
            case.group("fwd", "cpu"),
            1.5,
        )
        for case in (_BILINEAR, _AREA)
    ),
)
FLAT_BATCHES = (32, 128, 512)
"""The CPU bilinear forward's time per sample must stay within 20% over these batch sizes."""


def run_suite(json_path: Path, pytest_args: list[str]) -> int:
    """Run ``pytest benchmarks/ --benchmark-only`` saving ``json_path``; add the load averages and the
    command to the JSON. Returns pytest's exit code."""
    command = [sys.executable, "-m", "pytest", "benchmarks/", "--benchmark-only", f"--benchmark-json={json_path}"]
    command += pytest_args
    env = [f"{name}={os.environ[name]}" for name in (THREADS_ENV, FULL_ENV) if name in os.environ]
    commit = checkout_commit()
    before = os.getloadavg()
    code = subprocess.call(command, cwd=ROOT)
    after = os.getloadavg()
    if json_path.exists():
        data = json.loads(json_path.read_text())
        data["report"] = {
            "load_average_before": before,
            "load_average_after": after,
            "command": shlex.join([*env, "python", "-m", "benchmarks.report", *pytest_args]),
            "commit": commit,
        }
        json_path.write_text(json.dumps(data, indent=2))
    return code


def checkout_commit() -> str:
    """``git describe --always --dirty`` of the checkout the suite runs from, or ``"unknown"``."""
    try:
        completed = subprocess.run(
            ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return completed.stdout.strip()


def recorded_backend(data: dict) -> dict[str, object] | None:
    """The backend a saved run recorded (``backend``, ``kernels``, ``package``), or None if it predates that."""
    ours = data.get("machine_info", {}).get("gdram", {})
    return {key: ours[key] for key in ("backend", "kernels", "package") if key in ours} if "backend" in ours else None


def _ratio(value: float) -> str:
    return f"{value:.0f}x" if value >= 100 else f"{value:.1f}x" if value >= 10 else f"{value:.2f}x"


def _seconds(value: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value * 1e9:.3g} ns"


def _groups(data: dict, stat: str) -> dict[str, dict[str, dict]]:
    """{group: {implementation: {"time": seconds, "info": extra_info}}}."""
    groups: dict[str, dict[str, dict]] = {}
    for bench in data["benchmarks"]:
        info = bench["extra_info"]
        groups.setdefault(bench["group"], {})[info["implementation"]] = {"time": bench["stats"][stat], "info": info}
    return groups


def _sort_key(item: tuple[str, dict[str, dict]]) -> tuple:
    """Device, mode, then batch, image area, scales and glimpse size."""
    info = next(iter(item[1].values()))["info"]
    pixels = info.get("height", 0) * info.get("width", 0)
    return (
        info["device"],
        info.get("mode", ""),
        info.get("batch", 0),
        pixels,
        *(info.get(key, 0) for key in CASE_ORDER),
    )


def ratios(groups: dict[str, dict[str, dict]], group: str, peer: str) -> float | None:
    """Peer time / fused time on ``group``, or None where either was not measured."""
    entries = groups.get(group, {})
    if FUSED not in entries or peer not in entries:
        return None
    return entries[peer]["time"] / entries[FUSED]["time"]


def section(
    groups: dict[str, dict[str, dict]],
    kind: str,
    title: str,
    stat: str,
    columns: tuple[tuple[str, str], ...] = PEER_COLUMNS,
    sort_key: Callable[[tuple[str, dict[str, dict]]], tuple] = _sort_key,
) -> list[str]:
    """The markdown table of one kind of benchmark: one row per group, one ratio column per peer."""
    rows = sorted(((g, e) for g, e in groups.items() if next(iter(e.values()))["info"]["kind"] == kind), key=sort_key)
    if not rows:
        return []
    present = [(name, label) for name, label in columns if any(name in entries for _, entries in rows)]
    lines = [f"### {title}", "", f"| case | fused ({stat}) | " + " | ".join(label for _, label in present) + " |"]
    lines.append("|---|---:|" + "---:|" * len(present))
    for group, entries in rows:
        fused = _seconds(entries[FUSED]["time"]) if FUSED in entries else "-"
        cells = []
        for name, _ in present:
            value = ratios(groups, group, name)
            cells.append("-" if value is None else _ratio(value))
        lines.append(f"| {group} | {fused} | " + " | ".join(cells) + " |")
    return [*lines, ""]


GROWTH_AXES = (
    ("batch size at 128x128", {"height": 128, "width": 128, "num_scales": 4, "size": 12, "layout": CONTIGUOUS}),
    ("image size at batch 32", {"batch": 32, "num_scales": 4, "size": 12, "layout": CONTIGUOUS}),
)


def _field(info: dict[str, object], key: str) -> object:
    """A case field of a benchmark's ``extra_info``; runs from before the layout was recorded were NCHW."""
    return info.get(key, CONTIGUOUS if key == "layout" else None)


def growth_section(groups: dict[str, dict[str, dict]], title: str, fixed: dict[str, int]) -> list[str]:
    """Forward time of each implementation along one sweep, relative to its time on the sweep's smallest case."""
    lines: list[str] = []
    sweeps: dict[tuple[str, str], list[tuple[str, dict[str, dict]]]] = {}
    for group, entries in groups.items():
        info = next(iter(entries.values()))["info"]
        if info["kind"] == "fwd" and all(_field(info, key) == value for key, value in fixed.items()):
            sweeps.setdefault((info["device"], info["mode"]), []).append((group, entries))
    for (device, mode), rows in sorted(sweeps.items()):
        if len(rows) < 2:
            continue
        rows.sort(key=_sort_key)
        names = [FUSED, *(name for name, _ in PEER_COLUMNS if all(name in entries for _, entries in rows))]
        first = rows[0][1]
        lines += [
            f"### Cost growth with {title} ({mode}, {device}): forward time / time on the first row",
            "",
            "| case | " + " | ".join(names) + " |",
            "|---|" + "---:|" * len(names),
        ]
        for group, entries in rows:
            cells = [f"{entries[name]['time'] / first[name]['time']:.2f}" for name in names]
            lines.append(f"| {group} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def _is_box(entries: dict[str, dict]) -> bool:
    """Whether a group times the box op (its kinds are ``box-fwd`` and ``box-fwdbwd``)."""
    return str(next(iter(entries.values()))["info"].get("kind", "")).startswith("box-")


def memory_section(
    groups: dict[str, dict[str, dict]],
    columns: tuple[tuple[str, str], ...] = PEER_COLUMNS,
    box: bool = False,
    sort_key: Callable[[tuple[str, dict[str, dict]]], tuple] = _sort_key,
) -> list[str]:
    """Memory of forward+backward per group of the retina op (``box``: of the box op): the fused op's,
    and each peer's as a ratio to it."""
    rows = sorted(
        ((g, e) for g, e in groups.items() if FUSED in e and "memory_bytes" in e[FUSED]["info"] and _is_box(e) == box),
        key=sort_key,
    )
    if not rows:
        return []
    lines = [
        f"### {'Box glimpse: memory' if box else 'Memory'} of forward + backward (peer / fused)",
        "",
        "CPU: bytes a forward keeps for its backward (output + saved tensors, inputs excluded); "
        "CUDA: peak allocated above the inputs.",
        "",
        "| case | fused | " + " | ".join(label for _, label in columns) + " |",
        "|---|---:|" + "---:|" * len(columns),
    ]
    for group, entries in rows:
        fused = entries[FUSED]["info"]["memory_bytes"]
        cells = []
        for name, _ in columns:
            peer = entries.get(name, {}).get("info", {}).get("memory_bytes")
            cells.append("-" if peer is None or fused == 0 else f"{peer / 2**20:.1f} MiB ({_ratio(peer / fused)})")
        lines.append(f"| {group} | {fused / 2**20:.1f} MiB | " + " | ".join(cells) + " |")
    return [*lines, ""]


def targets_section(groups: dict[str, dict[str, dict]]) -> list[str]:
    """Each issue target: the measured ratio and whether it is met."""
    lines = ["### Targets", "", "| target | ratio | status |", "|---|---:|---|"]
    for target in TARGETS:
        value = ratios(groups, target.group, target.peer)
        if value is None:
            lines.append(f"| {target.label} | - | not measured |")
            continue
        met = value > target.threshold if target.strict else value >= target.threshold
        lines.append(f"| {target.label} | {_ratio(value)} | {'met' if met else 'NOT met'} |")
    return [*lines, ""]


def _fused_time(groups: dict[str, dict[str, dict]], group: str) -> float | None:
    entry = groups.get(group, {}).get(FUSED)
    return None if entry is None else entry["time"]


def fused_targets_section(groups: dict[str, dict[str, dict]]) -> list[str]:
    """The targets on the fused op alone: slower cases against their baselines, and the time per
    sample of the bilinear forward over the batch sweep (max / min within 1.2)."""
    lines = ["| target | fused time ratio | status |", "|---|---:|---|"]
    for target in FUSED_TARGETS:
        time, baseline = _fused_time(groups, target.group), _fused_time(groups, target.baseline)
        if time is None or baseline is None:
            lines.append(f"| {target.label} | - | not measured |")
            continue
        value = time / baseline
        lines.append(f"| {target.label} | {_ratio(value)} | {'met' if value <= target.limit else 'NOT met'} |")
    per_sample = per_sample_times(groups, "cpu")
    flat = [per_sample[batch][FUSED] for batch in FLAT_BATCHES if FUSED in per_sample.get(batch, {})]
    label = f"CPU bilinear forward: time per sample flat within 20% over batch {', '.join(map(str, FLAT_BATCHES))}"
    if len(flat) == len(FLAT_BATCHES):
        value = max(flat) / min(flat)
        lines.append(f"| {label} | {_ratio(value)} (max / min) | {'met' if value <= 1.2 else 'NOT met'} |")
    else:
        lines.append(f"| {label} | - | not measured |")
    return [*lines, ""]


def per_sample_times(groups: dict[str, dict[str, dict]], device: str) -> dict[int, dict[str, float]]:
    """{batch: {implementation: seconds per sample}} of the bilinear forward's batch sweep (NCHW, 128x128)."""
    times: dict[int, dict[str, float]] = {}
    for batch in sorted({1, *FLAT_BATCHES}):
        entries = groups.get(replace(_BILINEAR, batch=batch).group("fwd", device), {})
        times[batch] = {name: entry["time"] / batch for name, entry in entries.items()}
    return times


def per_sample_section(groups: dict[str, dict[str, dict]]) -> list[str]:
    """Time per sample of each implementation over the bilinear forward's batch sweep on the CPU."""
    times = {batch: row for batch, row in per_sample_times(groups, "cpu").items() if row}
    if len(times) < 2:
        return []
    names = [FUSED, *(name for name, _ in PEER_COLUMNS if all(name in row for row in times.values()))]
    lines = [
        "### Time per sample over the batch sweep (bilinear forward, 128x128, cpu)",
        "",
        "| batch | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for batch, row in times.items():
        lines.append(f"| {batch} | " + " | ".join(_seconds(row[name]) for name in names) + " |")
    return [*lines, ""]


BOX_PEER_COLUMNS = (
    ("roi_align", "roi_align"),
    ("tnet_unfold", "TNet: unfold, gather, interpolate"),
    ("crop_loop", "crop + interpolate loop"),
    ("affine_grid_sample", "affine_grid + grid_sample"),
    ("coverage_einsum", "coverage einsum (area)"),
    (FUSED_COMPILED, "fused, torch.compile"),
)
BOX_SECTIONS = (("box-fwd", "Box glimpse: forward"), ("box-fwdbwd", "Box glimpse: forward + backward"))
_GRID_SAMPLE = "affine_grid_sample"


@dataclass(frozen=True)
class BoxTarget:
    """An issue target of the box op, on every case of TNet's grid (:func:`benchmarks.box_cases.tnet_cases`)
    on the CPU: the fused op is ``threshold`` times faster than ``peer`` or more (``strict``: more than
    ``threshold``); with ``peer`` None, the fused op's time is at most ``threshold`` times its time on
    the same case in ``baseline_mode``."""

    label: str
    kind: str
    mode: str
    peer: str | None
    threshold: float
    strict: bool = False
    baseline_mode: str = "bilinear"


BOX_TARGETS = (
    BoxTarget("CPU bilinear forward: >= 4x roi_align", "fwd", "bilinear", "roi_align", 4),
    BoxTarget("CPU bilinear forward: >= 3x TNet's method", "fwd", "bilinear", "tnet_unfold", 3),
    BoxTarget("CPU area forward: <= 2x bilinear forward (fused / fused)", "fwd", "area", None, 2),
    BoxTarget("CPU area forward: faster than the antialiased crop loop", "fwd", "area", "crop_loop", 1, strict=True),
    BoxTarget("CPU bilinear fwd + bwd: >= 2x affine_grid + grid_sample", "fwdbwd", "bilinear", _GRID_SAMPLE, 2),
)


def _box_sort_key(item: tuple[str, dict[str, dict]]) -> tuple:
    """Device, mode, placement, cell side, batch, image area, boxes, output size."""
    info = next(iter(item[1].values()))["info"]
    return (
        info["device"],
        info.get("mode", ""),
        info.get("placement", ""),
        info.get("side", 0),
        info.get("batch", 0),
        info.get("height", 0) * info.get("width", 0),
        info.get("boxes", 0),
        info.get("size", 0),
    )


def _box_target_value(groups: dict[str, dict[str, dict]], target: BoxTarget, case: box_cases.BoxCase) -> float | None:
    """The target's ratio on one case (peer / fused, or fused / fused on the baseline mode), or None."""
    group = case.group(target.kind, "cpu")
    if target.peer is not None:
        return ratios(groups, group, target.peer)
    time = _fused_time(groups, group)
    baseline = _fused_time(groups, replace(case, mode=target.baseline_mode).group(target.kind, "cpu"))
    return None if time is None or baseline is None else time / baseline


def box_targets_section(groups: dict[str, dict[str, dict]]) -> list[str]:
    """Each box target over TNet's grid: how many cases meet it and the worst case."""
    lines = [
        "### Box glimpse: targets (every case of TNet's grid, cpu)",
        "",
        "| target | cases met | worst case | worst ratio | status |",
        "|---|---:|---|---:|---|",
    ]
    for target in BOX_TARGETS:
        values = []
        for case in box_cases.tnet_cases(target.mode):
            value = _box_target_value(groups, target, case)
            if value is not None:
                values.append((value, case.label(target.kind)))
        if not values:
            lines.append(f"| {target.label} | - | - | - | not measured |")
            continue

        def met(value: float, target: BoxTarget = target) -> bool:
            if target.peer is None:
                return value <= target.threshold
            return value > target.threshold if target.strict else value >= target.threshold

        worst = max(values) if target.peer is None else min(values)
        count = sum(met(value) for value, _ in values)
        total = len(box_cases.tnet_cases(target.mode))
        status = "met" if count == total else "NOT met" if len(values) == total else "partly measured"
        lines.append(f"| {target.label} | {count} / {len(values)} | {worst[1]} | {_ratio(worst[0])} | {status} |")
    return [*lines, ""]


def box_sections(groups: dict[str, dict[str, dict]], stat: str) -> list[str]:
    """The box op's part of the report: its targets, its ratio tables and its memory."""
    box_groups = {group: entries for group, entries in groups.items() if _is_box(entries)}
    if not box_groups:
        return []
    lines = [
        "## Box glimpse benchmarks",
        "",
        "- cases: 32 images of 3x512x512, K boxes per image = TNet's cells (3x3 grid of 256-px cells, 128 px apart) "
        "unless the case says otherwise; ratio = peer time / fused time (> 1: the fused op is faster)",
        "",
    ]
    lines += box_targets_section(box_groups)
    for kind, title in BOX_SECTIONS:
        lines += section(box_groups, kind, title, stat, columns=BOX_PEER_COLUMNS, sort_key=_box_sort_key)
    lines += memory_section(box_groups, columns=BOX_PEER_COLUMNS, box=True, sort_key=_box_sort_key)
    return lines


def header(data: dict, stat: str) -> list[str]:
    """Machine, software, threads, GPU and load of the run."""
    machine = data["machine_info"]
    ours = machine.get("gdram", {})
    report = data.get("report", {})
    loads = [
        f"{name} {' / '.join(f'{x:.2f}' for x in report[key])}"
        for name, key in (
            ("before", "load_average_before"),
            ("after", "load_average_after"),
        )
        if key in report
    ]
    lines = [
        f"## Retina glimpse benchmarks on {machine.get('node', platform.node())}",
        "",
        f"- date: {data.get('datetime', datetime.now(timezone.utc).isoformat())}",
        f"- CPU: {ours.get('cpu_model', machine.get('cpu', {}).get('brand_raw', '?'))}, "
        f"{ours.get('cpu_count', '?')} cores; torch threads: {ours.get('torch_threads', '?')}",
        f"- torch {ours.get('torch_version', '?')}, Python {machine.get('python_version', '?')}; "
        f"GPU: {ours.get('gpu', '?')}",
        f"- gdram_ext backend: {_backend_line(recorded_backend(data))}",
        f"- checkout: {report.get('commit', 'not recorded')}",
        f"- load average (1 / 5 / 15 min): {'; '.join(loads) if loads else 'not recorded'}",
        f"- statistic: {stat} over rounds; ratio = peer time / fused time on the same case and device "
        "(> 1: the fused op is faster), all from one run",
    ]
    if "command" in report:
        lines.append(f"- command: `{report['command']}`")
    return [*lines, ""]


def _backend_line(active: dict[str, object] | None) -> str:
    if active is None:
        return "not recorded (a run from before the backend was recorded: the fused figures may be the reference's)"
    kernels = ", ".join(active["kernels"]) or "none"
    return f"{active['backend']}, kernels: {kernels} (package {active.get('package', '?')})"


def render(data: dict, stat: str = "min") -> str:
    """The whole markdown report of a pytest-benchmark JSON."""
    groups = _groups(data, stat)
    lines = header(data, stat) + targets_section(groups) + fused_targets_section(groups)
    for kind, title in SECTIONS:
        lines += section(groups, kind, title, stat)
    lines += per_sample_section(groups)
    for title, fixed in GROWTH_AXES:
        lines += growth_section(groups, title, fixed)
    lines += memory_section(groups)
    lines += box_sections(groups, stat)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    host = platform.node() or "host"
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks" / f"results-{host}.json")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / f"results-{host}.md")
    parser.add_argument("--from-json", type=Path, help="render this saved run instead of running the suite")
    parser.add_argument("--stat", default="min", choices=("min", "median", "mean"))
    parser.add_argument("--check", action="store_true", help="only check that the compiled kernels would be timed")
    args, pytest_args = parser.parse_known_args(argv)
    code = 0
    source = args.from_json
    if source is None:
        try:
            require_compiled()
        except RuntimeError as error:
            print(f"benchmarks.report: {error}", file=sys.stderr)
            return 2
        if args.check:
            print(f"gdram_ext: {backend_info()}")
            return 0
        code = run_suite(args.json.resolve(), pytest_args)
        source = args.json
    if not source.exists():
        print(f"no benchmark results at {source}", file=sys.stderr)
        return code or 1
    data = json.loads(source.read_text())
    active = recorded_backend(data)
    if active is not None and active["backend"] != "compiled":
        message = f"{source} timed the {active['backend']!r} backend, not the compiled kernels"
        print(f"benchmarks.report: {message}", file=sys.stderr)
        return 2
    text = render(data, args.stat)
    print(text)
    args.output.write_text(text + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
