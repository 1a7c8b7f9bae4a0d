"""Caching-allocator slack and memory outside PyTorch, measured from real CUDA OOM messages
(validation/allocator.toml).

For every [[oom]] point it derives

    fragmentation  = reserved-but-unallocated / allocated      (the caching allocator's slack)
    non_pytorch    = in_use - allocated - reserved_unallocated  (GiB: CUDA context, NCCL, cuBLAS
                                                                  workspaces, other libraries)
    other_procs    = capacity - free - in_use                   (GiB held by other processes)

and prints n, median, 90th percentile and max of the first two, overall and split by stack,
by expandable_segments (true / false / unknown) and by distributed (multi-GPU / single / unknown).
Points printed in the old message format ("reserved in total by PyTorch", no in-use figure)
give fragmentation only.

The leave-one-source-out block recomputes the overall 90th percentile and max without each
repository in turn and says how many of that repository's own points fall at or under them:
a margin fitted on the others that its own points exceed is a margin that would not have held.

    python validation/allocator_fit.py
"""

from __future__ import annotations

import sys
import tomllib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parent / "allocator.toml"


@dataclass(frozen=True)
class Point:
    id: str
    repository: str
    stack: str
    expandable: str  # "true" / "false" / "unknown"
    distributed: str  # "true" / "false" / "unknown"
    capacity: float
    free: float
    in_use: float | None
    allocated: float
    reserved_unallocated: float

    @property
    def fragmentation(self) -> float:
        return self.reserved_unallocated / self.allocated

    @property
    def non_pytorch(self) -> float | None:
        if self.in_use is None:
            return None
        return self.in_use - self.allocated - self.reserved_unallocated

    @property
    def other_processes(self) -> float | None:
        if self.in_use is None:
            return None
        return self.capacity - self.free - self.in_use


def _flag(v: object) -> str:
    if v is True:
        return "true"
    if v is False:
        return "false"
    return "unknown"


def load(path: Path = DATA) -> list[Point]:
    raw = tomllib.loads(path.read_text())["oom"]
    out = []
    for r in raw:
        if "reserved_unallocated_gib" in r:
            ru = float(r["reserved_unallocated_gib"])
        else:
            ru = float(r["reserved_total_gib"]) - float(r["allocated_gib"])
        out.append(Point(
            id=r["id"], repository=r["repository"], stack=r["stack"],
            expandable=_flag(r["expandable_segments"]), distributed=_flag(r["distributed"]),
            capacity=float(r["capacity_gib"]), free=float(r["free_gib"]),
            in_use=None if r.get("in_use_gib") is None else float(r["in_use_gib"]),
            allocated=float(r["allocated_gib"]), reserved_unallocated=ru))
    return out


def _stats(xs: list[float]) -> tuple[int, float, float, float]:
    if not xs:
        return 0, float("nan"), float("nan"), float("nan")
    a = np.asarray(xs, dtype=float)
    return len(a), float(np.median(a)), float(np.percentile(a, 90)), float(a.max())


def summary_rows(points: list[Point]) -> list[tuple[str, tuple, tuple]]:
    groups: dict[str, list[Point]] = defaultdict(list)
    for p in points:
        groups["overall"].append(p)
        groups[f"stack={p.stack}"].append(p)
        groups[f"expandable={p.expandable}"].append(p)
        groups[f"distributed={p.distributed}"].append(p)
    order = ["overall"] + sorted(k for k in groups if k.startswith("expandable=")) \
        + sorted(k for k in groups if k.startswith("distributed=")) + sorted(k for k in groups if k.startswith("stack="))
    rows = []
    for k in order:
        g = groups[k]
        frag = _stats([p.fragmentation for p in g])
        npt = _stats([p.non_pytorch for p in g if p.non_pytorch is not None])
        rows.append((k, frag, npt))
    return rows


def loso_rows(points: list[Point]) -> list[tuple[str, int, float, float, int, float, float, int, int]]:
    """Per repository: fragmentation p90/max of the others and how many own points fall at or under
    them; the same for non-PyTorch GiB. Rows: repo, n_frag, p90, max, n_under_p90, ... ."""
    rows = []
    for repo in sorted({p.repository for p in points}):
        own = [p for p in points if p.repository == repo]
        rest = [p for p in points if p.repository != repo]
        f_rest = np.asarray([p.fragmentation for p in rest])
        f_p90, f_max = float(np.percentile(f_rest, 90)), float(f_rest.max())
        f_own = [p.fragmentation for p in own]
        n_rest = np.asarray([p.non_pytorch for p in rest if p.non_pytorch is not None])
        n_p90, n_max = float(np.percentile(n_rest, 90)), float(n_rest.max())
        n_own = [p.non_pytorch for p in own if p.non_pytorch is not None]
        rows.append((repo, len(f_own), f_p90, sum(x <= f_p90 for x in f_own), f_max, sum(x <= f_max for x in f_own),
                     len(n_own), n_p90, sum(x <= n_p90 for x in n_own), n_max, sum(x <= n_max for x in n_own)))
    return rows


def main(argv: list[str] | None = None) -> int:
    points = load()
    repos = {p.repository for p in points}
    print(f"{len(points)} OOM messages from {len(repos)} repositories "
          f"({sum(p.in_use is not None for p in points)} with the process's in-use figure)\n")
    hdr = (f"{'group':32s} {'n':>3s} {'frag med':>8s} {'p90':>6s} {'max':>6s}   "
           f"{'n':>3s} {'nonPT med':>9s} {'p90':>6s} {'max':>6s}")
    print(hdr)
    print("-" * len(hdr))
    for k, (fn, fmed, fp90, fmax), (nn, nmed, np90, nmax) in summary_rows(points):
        print(f"{k:32s} {fn:3d} {fmed:8.3f} {fp90:6.3f} {fmax:6.3f}   {nn:3d} {nmed:9.2f} {np90:6.2f} {nmax:6.2f}")
    print("\nfragmentation = reserved-but-unallocated / allocated; nonPT = in_use - allocated - reserved_unallocated (GiB)")

    print("\nleave-one-source-out (quantiles of all other repositories; own points at or under them)")
    hdr = (f"{'repository':45s} {'n':>2s} {'frag p90':>8s} {'<=':>3s} {'max':>6s} {'<=':>3s}   "
           f"{'n':>2s} {'nonPT p90':>9s} {'<=':>3s} {'max':>6s} {'<=':>3s}")
    print(hdr)
    print("-" * len(hdr))
    tot = np.zeros(4, dtype=int)
    cnt = np.zeros(2, dtype=int)
    for repo, nf, fp90, fu90, fmax, fumax, nn, np90, nu90, nmax, numax in loso_rows(points):
        print(f"{repo:45s} {nf:2d} {fp90:8.3f} {fu90:3d} {fmax:6.3f} {fumax:3d}   "
              f"{nn:2d} {np90:9.2f} {nu90:3d} {nmax:6.2f} {numax:3d}")
        tot += (fu90, fumax, nu90, numax)
        cnt += (nf, nn)
    print(f"\nheld out under the others' p90: fragmentation {tot[0]}/{cnt[0]}, non-PyTorch {tot[2]}/{cnt[1]}; "
          f"under the others' max: fragmentation {tot[1]}/{cnt[0]}, non-PyTorch {tot[3]}/{cnt[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
