"""The README's results table, built from the tables ``experiments/reproduce.py`` wrote.

    python experiments/summary.py            # rewrite the table in README.md
    python experiments/summary.py --check    # exit 1 if README.md's table is out of date

Every cell comes from ``experiments/results/<stem>.md`` (and its ``_seeds.md`` spread when
there is one, else each ``_seed<N>.md`` on its own); the paper's values come from
``reproduce.BENCHMARKS`` and the ANIL paper's from ``ANIL`` below. The verdict of a row is
computed, never written: see ``verdict``.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
README = ROOT / "README.md"
BEGIN, END = "<!-- results-table:begin -->", "<!-- results-table:end -->"

# Raghu et al. 2020 (ANIL), Table 2: MAML / ANIL, mean return after adaptation, their budgets
ANIL = {
    "navigation2d": "-20.3 ± 3.2 / -20.1",
    "halfcheetah_dir": "170.4 ± 21.0 / 363.2",
    "halfcheetah_vel": "-139.0 ± 18.9 / -120.9",
}
TITLE = re.compile(
    r"^# (?P<benchmark>\S+): adaptation on held-out tasks \((?P<budget>\w+) budget\)"
)
CELL = re.compile(r"^(?P<mean>-?[\d.]+)%? ± (?P<ci>[\d.]+)%?")
PAIRED = re.compile(r"^Paired over the same held-out tasks .*\(its best\): (?P<diff>\S+ ± \S+) ")
SEED_STEM = re.compile(r"_seed(\d+)$")  # reproduce.result_stem's suffix for seeds but 1
ORDER = ("navigation2d", "halfcheetah_vel", "halfcheetah_dir", "ant_vel", "ant_dir")


@dataclass
class Result:
    """What one generated table says, as numbers."""

    stem: str
    benchmark: str
    budget: str
    returns: dict[str, list[tuple[float, float]]]  # method -> (mean, ci95) after 0..3 steps
    env_steps: dict[str, str]  # method -> its "training env steps" cell
    success: dict[str, list[tuple[float, float]]]  # Meta-World: percent after 0..3 steps
    paper_share: str | None  # "1.0%": MAML-TRPO's env steps as a share of the paper's budget
    fair_baselines: bool  # False: a table from before issue 17's baselines (fixed PPO budget)
    oracle_flat: bool | None  # None: no oracle
    paired: str | None = None  # "+21.3 ± 19.6": MAML-TRPO minus pretrained, task by task


def _rows(lines: list[str], start: int) -> tuple[dict[str, list[str]], int]:
    """The body of the Markdown table whose header is at ``lines[start]``."""
    rows, i = {}, start + 2
    while i < len(lines) and lines[i].startswith("| "):
        cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
        rows[cells[0]] = cells[1:]
        i += 1
    return rows, i


def _numbers(cells: list[str]) -> list[tuple[float, float]]:
    out = []
    for cell in cells[:4]:
        match = CELL.match(cell)
        if match is None:
            raise ValueError(f"not a 'mean ± ci' cell: {cell!r}")
        out.append((float(match["mean"]), float(match["ci"])))
    return out


def parse(path: Path) -> Result | None:
    """A reproduce.py table, or None for any other Markdown file."""
    lines = path.read_text(encoding="utf-8").splitlines()
    title = TITLE.match(lines[0]) if lines else None
    if title is None:
        return None
    headers = [i for i, line in enumerate(lines) if line.startswith("| method |")]
    table, _ = _rows(lines, headers[0])
    success = _rows(lines, headers[1])[0] if len(headers) > 1 else {}
    text = "\n".join(lines)
    share = re.search(r"MAML-TRPO here: [^,]+, ([\d.]+%) of it", text)
    paired = next((m["diff"] for line in lines if (m := PAIRED.match(line))), None)
    return Result(
        stem=path.stem,
        benchmark=title["benchmark"],
        budget=title["budget"],
        returns={m: _numbers(cells) for m, cells in table.items()},
        env_steps={m: cells[4] for m, cells in table.items()},
        success={m: _numbers(cells) for m, cells in success.items()},
        paper_share=share[1] if share else None,
        fair_baselines="settings:" in text,
        oracle_flat=None if "oracle" not in table else "stopped: flattened" in text,
        paired=paired,
    )


def _steps(cell: str) -> float:
    value, unit = cell.split()
    return float(value) * {"k": 1e3, "M": 1e6}[unit]


def best_step(values: list[tuple[float, float]]) -> int:
    """The step (0..3) with the highest mean: a baseline is judged by its best, which may be
    no adaptation at all (the inner step is tuned for the meta-learner, not for it)."""
    return max(range(len(values)), key=lambda k: values[k][0])


def verdict(result: Result) -> str:
    """The paper's claim, checked on this table: MAML-TRPO after one step clearly above the
    pretrained baseline's best step (95 % intervals apart), and an oracle above both as the
    upper bound. On a family that reports success (Meta-World) the success rate is compared,
    the benchmark's own currency; else the return."""
    if "pretrained" not in result.returns:
        return "no pretrained baseline"
    by_success = bool(result.success.get("maml_trpo")) and "pretrained" in result.success
    values = result.success if by_success else result.returns
    metric = " (success rate)" if by_success else ""
    maml = values["maml_trpo"][1]
    pre = values["pretrained"][best_step(values["pretrained"])]
    if not result.fair_baselines:
        return "not checked: earlier baselines (a fixed, small PPO budget)"
    if maml[0] - maml[1] > pre[0] + pre[1]:
        said = f"reproduced{metric}: MAML above pretrained"
        if _steps(result.env_steps["pretrained"]) < 0.99 * _steps(result.env_steps["maml_trpo"]):
            said += " (pretrained at fewer env steps)"
        if "oracle" in values:
            best = max(mean for mean, _ in values["oracle"])
            said += ", oracle above both" if best > maml[0] else ", but the oracle is below MAML"
        return said
    if maml[0] + maml[1] < pre[0] - pre[1]:
        return f"not at this budget{metric}: MAML below pretrained"
    return f"not at this budget{metric}: MAML and pretrained overlap"


def _cell(values: list[tuple[float, float]], steps: tuple[int, ...], percent: bool = False) -> str:
    form = "{:.0f} %" if percent else "{:+.1f}"
    return " -> ".join(form.format(values[k][0]) for k in steps)


def _seeds_note(result: Result, results_dir: Path = RESULTS) -> str:
    """The spread over seeds from ``_seeds.md``; without one, each other seed's table alone
    (one step and its verdict), so a row never hides a seed that was run."""
    spread = results_dir / f"{result.stem}_seeds.md"
    if not spread.is_file():
        seeds = {
            int(match[1]): table
            for table in results_dir.glob(f"{result.stem}_seed*.md")
            if (match := SEED_STEM.search(table.stem))
        }
        notes = []
        for seed, table in sorted(seeds.items()):
            if (r := parse(table)) is not None:
                one_step = r.returns["maml_trpo"][1][0]
                notes.append(f"; seed {seed}: {one_step:+.1f}, {verdict(r).split(':')[0]}")
        return "".join(notes)
    lines = spread.read_text(encoding="utf-8").splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| method |"))
    rows, _ = _rows(lines, header)
    cell = rows["maml_trpo"][1]  # "-20.1 ± 0.7 (n=3)"
    return f"; {cell.split('(n=')[1].rstrip(')')} seeds: {cell.split(' (')[0]} (sd)"


def table(results: list[Result], benchmarks: dict[str, Any]) -> str:
    """The README table: one row per generated result, best budget last per benchmark."""
    head = (
        "| benchmark | budget | MAML-TRPO step 0 -> 1 -> 3 | pretrained step 1, best step | "
        "oracle step 0 / 1 | paper, step 1 | ANIL paper, MAML / ANIL | verdict |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- |"
    )
    lines = [head]
    for r in results:
        maml = r.returns["maml_trpo"]
        budget = f"`{r.budget}`: {r.env_steps['maml_trpo']} env steps"
        if r.paper_share:
            budget += f" ({r.paper_share} of the paper's)"
        if not r.fair_baselines:
            budget += "; earlier baselines"
        cell = _cell(maml, (0, 1, 3)) + _seeds_note(r)
        if r.success.get("maml_trpo"):
            cell += f"; success {_cell(r.success['maml_trpo'], (0, 1, 3), percent=True)}"
        pre = r.returns.get("pretrained")
        if pre is None:
            pre_cell = "-"
        else:
            k = best_step(pre)
            pre_cell = f"{pre[1][0]:+.1f}, best {pre[k][0]:+.1f} at step {k} "
            pre_cell += f"({r.env_steps['pretrained']})"
        oracle = r.returns.get("oracle")
        if oracle is None:
            oracle_cell = "-"
        elif not r.fair_baselines:
            oracle_cell = f"{oracle[0][0]:+.1f} / {oracle[1][0]:+.1f} (no flatness check)"
        else:
            flat = "flat" if r.oracle_flat else "cap, not flat"
            oracle_cell = f"{oracle[0][0]:+.1f} / {oracle[1][0]:+.1f} ({flat})"
        paired_note = f" (paired over tasks: {r.paired})" if r.paired else ""
        benchmark = benchmarks.get(r.benchmark)
        said = benchmark.paper if benchmark else {}
        paper_cell = ", ".join(
            f"{m.replace('_trpo', '').replace('maml', 'MAML')} {v[1]}"
            for m, v in said.items()
            if 1 in v
        ) or (benchmark.published if benchmark else "")
        lines.append(
            f"| {r.benchmark} | {budget} | {cell} | {pre_cell} | {oracle_cell} | "
            f"{paper_cell or '-'} | {ANIL.get(r.benchmark, '-')} | {verdict(r)}{paired_note} |"
        )
    return "\n".join(lines)


def collect() -> list[Result]:
    """Every generated table except per-seed repeats (their spread is in ``_seeds.md``)."""
    results = [
        r
        for path in sorted(RESULTS.glob("*.md"))
        if not SEED_STEM.search(path.stem)
        and not path.stem.endswith("_seeds")
        and (r := parse(path)) is not None
    ]

    def key(r: Result) -> tuple[int, str, float]:
        rank = ORDER.index(r.benchmark) if r.benchmark in ORDER else len(ORDER)
        return rank, r.benchmark, _steps(r.env_steps["maml_trpo"])

    return sorted(results, key=key)


def _benchmarks() -> dict[str, Any]:
    """``reproduce.BENCHMARKS``: the paper's values and published figures of each."""
    path = Path(__file__).parent / "reproduce.py"
    spec = importlib.util.spec_from_file_location("experiments_reproduce", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("experiments_reproduce", module)
    spec.loader.exec_module(module)
    return module.BENCHMARKS


def render(readme: str) -> str:
    """``readme`` with the text between the markers replaced by the current table."""
    start, end = readme.index(BEGIN) + len(BEGIN), readme.index(END)
    return readme[:start] + "\n" + table(collect(), _benchmarks()) + "\n" + readme[end:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if README.md is out of date")
    args = parser.parse_args(argv)
    current = README.read_text(encoding="utf-8")
    wanted = render(current)
    if args.check:
        if wanted != current:
            print("README.md: the results table is out of date: python experiments/summary.py")
            return 1
        return 0
    README.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
