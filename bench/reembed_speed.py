"""Re-embedding speed: ``facetrail reembed --model yunet-sface`` of a dlib home, against a plain
``facetrail ingest`` of the same folder with yunet-sface, and the people found before and after.

Run from the repository root:

    .venv/bin/python bench/reembed_speed.py [--data DIR] [--rounds 1] [--json]

Set-up (timed, but not part of the comparison): a new home with the ``dlib`` face model, the
folder ``--data`` (faces-small by default) registered as a folder source and ingested.

Then, in every round, both of these run as the CLI in a child process (Python start-up,
imports and model loading included; ``FACETRAIL_*`` variables removed, so the defaults apply):

- ``reembed``: ``facetrail --home COPY reembed --model yunet-sface --json`` on a fresh copy of
  the dlib home: every stored image read back from its recorded location (sha256 checked),
  analysed by yunet-sface in worker processes, stored under it, then its index built;
- ``ingest``: ``facetrail --home NEW ingest bench --json`` of the same folder into a new home
  (yunet-sface, the default of a new home; the source is registered beforehand, untimed).

The two alternate, the order reversed every round. Reported per side: images analysed, faces,
wall seconds of the command, images/s, the command's own ``seconds`` (the move or ingest
itself, without start-up), CPU seconds of the child's process tree and other processes' load.

The same people? Leave one out, on the whole folder as the gallery: every photo under
``--data``/people/<identity>/ is searched (threshold off, top 10), the candidates from the
probe's own image (the same sha256) are dropped, and the identity of the first remaining
candidate (the people/ folder it was found in; none for other folders) is compared with the
probe's. Done on the dlib home before the move, on the moved home after ``models use
yunet-sface``, and on the plainly ingested yunet-sface home (which should agree with the moved
one exactly). Printed: top-1 correct on each, and on how many probes the top-1 identity after
the move is the one before it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from _gallery import DEFAULT_DATA
from _machine import code_state, system_busy_seconds

REPO = Path(__file__).resolve().parent.parent
SOURCE = "bench"
TARGET = "yunet-sface"
FROM = "dlib"
SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})


@dataclass
class Side:
    name: str
    round: int
    images: int
    faces: int
    seconds: float
    """Wall time of the whole command."""
    command_seconds: float
    """The ingest's or move's own time, as the command reports it."""
    cpu_seconds: float
    other_processes_cores: float

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def cli(home: Path, *args: str, model: str | None = None
        ) -> tuple[dict[str, Any], float, float, float]:
    """``facetrail --home HOME ARGS --json`` in a child process: (its JSON, wall seconds, CPU
    seconds of its process tree, other processes' load in cores). ``model``: the face model
    of a new home (``FACETRAIL_FACE_MODEL``); else the defaults apply."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACETRAIL_")}
    if model is not None:
        env["FACETRAIL_FACE_MODEL"] = model
    cmd = [sys.executable, "-m", "facetrail", "--home", str(home), *args, "--json"]
    busy, own, started = system_busy_seconds(), children_cpu_seconds(), time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    cpu = children_cpu_seconds() - own
    others = max(0.0, system_busy_seconds() - busy - cpu)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"{' '.join(args)} failed with exit code {done.returncode}")
    return json.loads(done.stdout), wall, cpu, others / wall if wall else 0.0


def add_source(home: Path, data: Path, model: str | None = None) -> None:
    """Register ``data`` as the folder source; on a new home this records its face model."""
    cli(home, "sources", "add", SOURCE, "--kind", "folder", "--uri", str(data),
        "--lawful-basis", "benchmark on a public test set", "--purpose", "reembed benchmark",
        "--retention-days", "1", model=model)


def run_reembed(dlib_home: Path, work: Path, r: int) -> Side:
    home = work / f"reembed-{r}"
    shutil.copytree(dlib_home, home)
    out, wall, cpu, others = cli(home, "reembed", "--model", TARGET)
    if not out["complete"]:
        raise SystemExit(f"the move is incomplete: {out}")
    return Side("reembed", r, out["moved"], out["faces"], round(wall, 2), out["seconds"],
                round(cpu, 1), round(others, 2))


def run_ingest(data: Path, work: Path, r: int) -> Side:
    home = work / f"ingest-{r}"
    add_source(home, data)
    out, wall, cpu, others = cli(home, "ingest", SOURCE)
    return Side("ingest", r, out["images_new"], out["faces"], round(wall, 2), out["seconds"],
                round(cpu, 1), round(others, 2))


# -- the same people? -----------------------------------------------------------------------------
def identity(location: str, people: Path) -> str | None:
    """The people/<identity>/ folder ``location`` lies in, or None."""
    try:
        return Path(location).resolve().relative_to(people).parts[0]
    except (ValueError, IndexError):
        return None


def leave_one_out(home: Path, data: Path, use: str | None = None) -> dict[str, str | None]:
    """Top-1 identity of every people/ photo searched in ``home``, its own image left out
    (None: no face in the probe, or a top-1 from outside people/). ``use``: switch the home
    to that face model first (``models use``)."""
    import facetrail
    from facetrail.errors import NoFaceError
    from facetrail.imaging import sha256_hex

    people = (data / "people").resolve()
    photos = sorted(p for p in people.glob("*/*") if p.suffix.lower() in SUFFIXES)
    out: dict[str, str | None] = {}
    with facetrail.open(home) as engine:
        if use is not None:
            engine.use_model(use, actor="bench")
        for photo in photos:
            blob = photo.read_bytes()
            own = sha256_hex(blob)
            key = str(photo.relative_to(people))
            try:
                result = engine.search(blob, case_ref="BENCH-1", purpose="reembed benchmark",
                                       top=10, threshold=-10.0, min_quality=0.0, actor="bench")
            except NoFaceError:
                out[key] = None
                continue
            others = [c for c in result.candidates if c.image.sha256 != own]
            out[key] = None
            if others:
                names = [identity(a.location, people) for a in others[0].appearances]
                out[key] = next((n for n in names if n is not None), None)
    return out


def agreement(before: dict[str, str | None], after: dict[str, str | None]) -> dict[str, int]:
    truth = {k: k.split("/")[0] for k in before}
    return {
        "probes": len(before),
        "correct_before": sum(before[k] == truth[k] for k in before),
        "correct_after": sum(after.get(k) == truth[k] for k in before),
        "same_top1": sum(before[k] == after.get(k) for k in before),
        "same_top1_correct": sum(before[k] == after.get(k) == truth[k] for k in before),
        "fixed": sum(before[k] != truth[k] and after.get(k) == truth[k] for k in before),
        "broken": sum(before[k] == truth[k] and after.get(k) != truth[k] for k in before),
        "no_face_before": sum(before[k] is None for k in before),
        "no_face_or_outside_after": sum(after.get(k) is None for k in before),
    }


# -- main ------------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict[str, Any]:
    data = args.data.resolve()
    with tempfile.TemporaryDirectory(prefix="facetrail-reembed-bench-") as tmp:
        work = Path(tmp)
        dlib_home = work / "dlib"
        print(f"set-up: ingesting {data} into a {FROM} home ...", file=sys.stderr)
        add_source(dlib_home, data, model=FROM)
        setup, setup_wall, _, _ = cli(dlib_home, "ingest", SOURCE)
        sides: list[Side] = []
        for r in range(args.rounds):
            order = ("reembed", "ingest") if r % 2 == 0 else ("ingest", "reembed")
            for name in order:
                print(f"round {r + 1}: {name} ...", file=sys.stderr)
                sides.append(run_reembed(dlib_home, work, r) if name == "reembed"
                             else run_ingest(data, work, r))
        print("leave-one-out searches ...", file=sys.stderr)
        before = leave_one_out(dlib_home, data)
        after = leave_one_out(work / "reembed-0", data, use=TARGET)
        plain = leave_one_out(work / "ingest-0", data)
    return {
        "data": str(data), "cpu_count": os.cpu_count(), "code": code_state(str(REPO)),
        "setup": {"model": FROM, "images": setup["images_new"], "faces": setup["faces"],
                  "seconds": round(setup_wall, 1)},
        "sides": [{**asdict(s), "images_per_s": round(s.images_per_s, 2)} for s in sides],
        "agreement": agreement(before, after),
        "agreement_plain_ingest": agreement(before, plain),
        "moved_vs_plain_same_top1": sum(after[k] == plain.get(k) for k in after),
        "top1": {"before": before, "after": after, "plain_ingest": plain},
    }


def print_report(summary: dict[str, Any]) -> None:
    code, setup = summary["code"], summary["setup"]
    print(f"data: {summary['data']} (cpu_count {summary['cpu_count']}; code {code['commit']}, "
          f"src {code['src_sha256']})")
    print(f"set-up: {setup['model']} home, {setup['images']} images, {setup['faces']} faces, "
          f"ingested in {setup['seconds']} s")
    print(f"{'command':<40}{'round':>6}{'images':>8}{'faces':>7}{'wall s':>8}{'images/s':>10}"
          f"{'own s':>8}{'CPU s':>8}{'other load':>11}")
    label = {"reembed": f"reembed --model {TARGET} ({FROM} home)",
             "ingest": f"ingest (new home, {TARGET})"}
    for s in summary["sides"]:
        print(f"{label[s['name']]:<40}{s['round'] + 1:>6}{s['images']:>8}{s['faces']:>7}"
              f"{s['seconds']:>8.1f}{s['images_per_s']:>10.2f}{s['command_seconds']:>8.1f}"
              f"{s['cpu_seconds']:>8.1f}{s['other_processes_cores']:>11.2f}")
    rates: dict[str, list[float]] = {}
    for s in summary["sides"]:
        rates.setdefault(s["name"], []).append(s["images_per_s"])
    mean = {k: sum(v) / len(v) for k, v in rates.items()}
    print(f"reembed images/s / ingest images/s: {mean['reembed'] / mean['ingest']:.2f}")
    print()
    a, p = summary["agreement"], summary["agreement_plain_ingest"]
    n = a["probes"]
    print(f"leave-one-out over {n} people/ photos (gallery: the whole folder; own image left "
          "out):")
    print(f"  top-1 correct: {FROM} before {a['correct_before']}/{n}, {TARGET} after the move "
          f"{a['correct_after']}/{n}, {TARGET} plain ingest {p['correct_after']}/{n}")
    print(f"  same top-1 identity before and after: {a['same_top1']}/{n} "
          f"({a['same_top1_correct']} of them correct); fixed by the move {a['fixed']}, "
          f"broken {a['broken']}")
    print(f"  no face or top-1 outside people/: before {a['no_face_before']}, after "
          f"{a['no_face_or_outside_after']}")
    print(f"  moved home against plain ingest: same top-1 on "
          f"{summary['moved_vs_plain_same_top1']}/{n}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help=f"folder of images, with people/<identity>/ (default: {DEFAULT_DATA})")
    parser.add_argument("--rounds", type=int, default=1,
                        help="reembed and ingest runs each, alternating (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    if not (args.data / "people").is_dir():
        raise SystemExit(f"{args.data} has no people/ folder")
    summary = run(args)
    if args.json:
        json.dump(summary, sys.stdout, indent=2)
        print()
    else:
        print_report(summary)


if __name__ == "__main__":
    main()
