"""bench_scale.py's report: every command's figures, the peak memory of every process, and the targets met or
missed, from the figures bench_scale.py measured (`figures["sizes"][customers]`, each a size's runs and timings)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

from common import verdict
from processes import ROLES, Run, mb

TARGET_MEMORY_RATIO = 1.25  # every process's peak at the largest size over its peak at the smallest
TARGET_WORKER_BYTES = 2e9
TARGET_SCORE_RATE = 40_000  # customers per second end to end, largest size, TARGET_SCORE_WORKERS workers
TARGET_SCORE_WORKERS = 2
TARGET_SPEEDUP = 1.7  # 2 workers over 1, largest size
TARGET_GENERATE_RATE = 1_000_000  # transactions per second end to end, largest size
TARGET_TRAIN_S = 120.0
TARGET_GINI_GAP = 0.01
TARGET_VERIFY_SHARE = 0.05  # checking the part files, of scoring's CPU
TARGET_PORTFOLIO_SHARE = 0.10  # the portfolio's sums, of scoring's CPU


def plural(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'s' * (n != 1)}"


def commands(size: dict) -> list[tuple[str, Run]]:
    found = [("generate", size.get("generate"))]
    found += [(f"score, {plural(w, 'worker')}", run) for w, run in size.get("score", {}).items()]
    found.append(("train", size.get("train")))
    return [(name, run) for name, run in found if isinstance(run, Run) and run.ok]


def rate(size: dict, workers: int) -> float | None:
    done = size.get("score", {}).get(workers)
    return size["customers"] / done.seconds if done and done.ok else None


def inside_rate(done: Run | None) -> float | None:
    """Customers a second from the first part sent to the last one done, as the command's last progress line
    says: the rate without the interpreter's start, the imports and the cluster's start and stop."""
    found = re.findall(r"scored: \d+/\d+ parts, [\d,]+ customers, ([\d,]+)/s", done.log) if done and done.ok else []
    return float(found[-1].replace(",", "")) if found else None


def print_runs(figures: dict) -> None:
    print("\n== every command, end to end: interpreter start, imports, cluster start and stop included ==")
    print("  (CPU: of every process of the command; load: the machine's 1-minute load average as it started)\n")
    rows = list(iter_runs(figures))
    width = max(len(done.label) for done in rows)
    print(f"  {'command':<{width}}  {'wall s':>7} {'CPU s':>7} {'load':>5}")
    for done in rows:
        figure = done.figure if done.ok else f"FAILED (exit {done.returncode})"
        print(f"  {done.label:<{width}}  {done.seconds:>7.1f} {done.cpu_s:>7.1f} {done.load_before:>5.1f}  {figure}")
    print()
    for customers, size in figures["sizes"].items():
        one, two = rate(size, 1), rate(size, 2)
        if one and two:
            inside = [inside_rate(size["score"][w]) for w in (1, 2)]
            steady = f", {inside[1] / inside[0]:.2f}x from the first task to the last" if all(inside) else ""
            print(f"  {customers:,}: 2 workers score {two / one:.2f}x as fast as 1 end to end{steady}")
    print("\n== where the time goes: the commands' own log lines, seconds after each command started ==")
    largest = list(figures["sizes"].values())[-1:]
    shown = [size.get("train") for size in figures["sizes"].values()]
    shown += [done for size in largest for done in size.get("score", {}).values()]
    for done in shown:
        if done is None or not done.ok:
            continue
        print(f"  {done.label}:")
        for at, message in done.timeline:
            print(f"    {at:7.1f} s  {message[:110]}")
        print(f"    {done.seconds:7.1f} s  (exit)")


def print_memory(figures: dict) -> None:
    sizes = list(figures["sizes"].values())
    print("\n== peak resident memory of every process of each command (max RSS / VmHWM, sampled every 0.2 s) ==")
    for role, text in ROLES.items():
        print(f"  {role:<9} {text}")
    head = "".join(f"{size['customers']:>14,}" for size in sizes)
    print(f"\n  {'command':<20}{'process':<22}{head}{'ratio':>8}")
    names = list(dict.fromkeys(name for size in sizes for name, _ in commands(size)))
    for name in names:
        by_size = [dict(commands(size)).get(name) for size in sizes]
        roles = list(dict.fromkeys(role for done in by_size if done for role in done.roles()))
        for role in roles:
            counts = {done.count(role) for done in by_size if done}
            label = f"{role} (max of {max(counts)})" if max(counts) > 1 else role
            peaks = [done.peak(role) if done else 0 for done in by_size]
            cells = "".join(f"{mb(p) if p else '-':>14}" for p in peaks)
            ratio = f"{peaks[-1] / peaks[0]:.2f}" if len(peaks) > 1 and peaks[0] and peaks[-1] else ""
            print(f"  {name:<20}{label:<22}{cells}{ratio:>8}")
    for size in sizes:
        for name, done in commands(size):
            for role in ("scheduler", "nanny"):
                if done.count(role):
                    print(f"  note: {name} at {size['customers']:,} had a separate {role} process")
    if sizes and all(not done.count("scheduler") for size in sizes for _, done in commands(size)):
        print("  no separate scheduler process was seen: the LocalCluster's scheduler is part of the client's figure")


def memory_check(figures: dict) -> tuple[float | None, int | None]:
    """The worst ratio of a process's peak at the largest size to its peak at the smallest, over every
    command and kind of process; and the largest worker peak at any size."""
    sizes = list(figures["sizes"].values())
    if len(sizes) < 2:
        return None, None
    small, large = dict(commands(sizes[0])), dict(commands(sizes[-1]))
    ratios = [
        large[name].peak(role) / small[name].peak(role)
        for name in small.keys() & large.keys()
        for role in small[name].roles()
        if small[name].peak(role) and large[name].peak(role)
    ]
    workers = [done.peak("worker") for size in sizes for _, done in commands(size)]
    return (max(ratios) if ratios else None), (max(workers) if workers else None)


Target = tuple[str, str, bool | None]


def target(label: str, value: float | None, shown: str, met: Callable[[float], bool] | None) -> Target:
    """A target's line: the figure as `shown` formats it, and met, missed, or None when there is no figure
    (or when `met` is None: a figure printed beside the targets only)."""
    if value is None:
        return label, "-", None
    return label, shown.format(value), None if met is None else met(value)


def targets(figures: dict) -> list[Target]:
    sizes = list(figures["sizes"].values())
    if not sizes:
        return []
    small, large = sizes[0], sizes[-1]
    n, m = f"{large['customers']:,}", f"{small['customers']:,}"
    ratio, worker = memory_check(figures)
    rows = [
        target(
            f"memory flat: every process's peak at {n} <= {TARGET_MEMORY_RATIO}x its peak at {m}",
            ratio,
            "{:.2f}x",
            lambda r: r <= TARGET_MEMORY_RATIO,
        ),
        target(
            f"every worker's peak <= {TARGET_WORKER_BYTES / 1e9:g} GB",
            worker and worker / 2**20,
            "{:,.0f} MB",
            lambda w: w * 2**20 <= TARGET_WORKER_BYTES,
        ),
        target(
            f"score {n} with {TARGET_SCORE_WORKERS} workers >= {TARGET_SCORE_RATE:,} customers/s",
            rate(large, TARGET_SCORE_WORKERS),
            "{:,.0f}/s",
            lambda r: r >= TARGET_SCORE_RATE,
        ),
    ]
    for size in reversed(sizes):
        one, two = rate(size, 1), rate(size, 2)
        label = f"score {size['customers']:,}: 2 workers >= {TARGET_SPEEDUP}x as fast as 1"
        met = (lambda s: s >= TARGET_SPEEDUP) if size is large else None
        rows.append(
            target(
                label if size is large else f"{label} (printed only)",
                two / one if one and two else None,
                "{:.2f}x",
                met,
            )
        )
    scored = large["score"].get(2)
    share = large["verify_s"] / scored.cpu_s if scored and scored.ok and "verify_s" in large else None
    rows.append(
        target(
            f"verify {n}'s part files (size, SHA-256) <= {TARGET_VERIFY_SHARE:.0%} of scoring's CPU",
            share,
            "{:.1%}",
            lambda s: s <= TARGET_VERIFY_SHARE,
        )
    )
    for size in sizes:
        scored = size["score"].get(2)
        share = size["portfolio_s"] / scored.cpu_s if scored and scored.ok and "portfolio_s" in size else None
        rows.append(
            target(
                f"the portfolio of {size['customers']:,} <= {TARGET_PORTFOLIO_SHARE:.0%} of scoring's CPU",
                share,
                "{:.1%}",
                lambda s: s <= TARGET_PORTFOLIO_SHARE,
            )
        )
    speedup = large["map_search_s"] / large["map_runs_s"] if large.get("map_runs_s") else None
    rows.append(
        target(
            "map a part's scattered ids to rows by hash: sorted rows over rows as stored (printed only)",
            speedup,
            "{:.1f}x",
            None,
        )
    )
    generate, train = large["generate"], large.get("train")
    gen_rate = large["transactions"] / generate.seconds if generate.ok else None
    gap = abs(large["gini"] - small["gini"]) if "gini" in large and "gini" in small and large is not small else None
    rows += [
        target(
            f"generate {n} >= {TARGET_GENERATE_RATE:,} transactions/s",
            gen_rate,
            "{:,.0f}/s",
            lambda r: r >= TARGET_GENERATE_RATE,
        ),
        target(
            f"train on {n} (2 workers) <= {TARGET_TRAIN_S:g} s",
            train.seconds if train and train.ok else None,
            "{:.1f} s",
            lambda s: s <= TARGET_TRAIN_S,
        ),
        target(
            f"held-out Gini at {n} within {TARGET_GINI_GAP} of the Gini at {m}",
            gap,
            "{:.4f}",
            lambda g: g <= TARGET_GINI_GAP,
        ),
    ]
    return rows


def print_targets(rows: list[Target], customers: list[int]) -> None:
    print("\n== targets ==")
    if customers != [100_000, 1_000_000]:
        print(f"  (the targets are set for 100,000 and 1,000,000 customers; these sizes are {customers})")
    width, value_width = max(len(r[0]) for r in rows), max(len(r[1]) for r in rows)
    for label, value, ok in rows:
        shown = "-" if ok is None and label.endswith("(printed only)") else verdict(ok)
        print(f"  {label:<{width}}  {value:>{value_width}}  {shown}")


def iter_runs(figures: dict) -> Iterator[Run]:
    for value in figures.values():
        if isinstance(value, Run):
            yield value
        elif isinstance(value, dict):
            yield from iter_runs(value)
