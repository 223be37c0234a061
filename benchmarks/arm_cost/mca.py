"""Cycles per translation block: disassemble its instruction words (llvm-mc) and cost the block with llvm-mca on a
board's scheduling model (benchmarks/arm_cost/boards.py says which model stands for which core).

A block is costed as its steady state: llvm-mca runs it ITERATIONS times back to back and the cycles per iteration
are TotalCycles / Iterations. That is exact in kind for the hot loops that make up most of an inference (a GEMM or
depthwise inner loop is one block that branches to itself) and approximate for straight-line glue. llvm-mca assumes
every load hits the L1 data cache: what memory adds is profile.c's cache simulation (predict.py).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from benchmarks.arm_cost.profile import Block

LLVM_VERSION = 19  # first with --skip-unsupported-instructions; Debian bookworm's llvm-19
LLVM_BIN = Path(f"/usr/lib/llvm-{LLVM_VERSION}/bin")
MATTR = "+v8.2a,+dotprod,+fullfp16,+crc,+aes,+sha2,+rcpc,+lse,+rdm"
ITERATIONS = 100
CHUNK = 400  # regions per llvm-mca call
COVERAGE = 0.995  # the hottest blocks costed: this share of the instructions at least


class McaError(RuntimeError):
    """llvm-mc / llvm-mca missing or failing: one line saying which."""


def tool(name: str) -> str:
    path = LLVM_BIN / name
    if path.exists():
        return str(path)
    found = shutil.which(f"{name}-{LLVM_VERSION}")
    if not found:
        raise McaError(f"{name} of LLVM {LLVM_VERSION} not found: apt-get install llvm-{LLVM_VERSION}")
    return found


def missing_llvm() -> str | None:
    try:
        tool("llvm-mc")
        tool("llvm-mca")
    except McaError as e:
        return str(e)
    return None


def disassemble(blocks: list[Block]) -> list[list[str]]:
    """Each block's instructions as assembly text; words llvm-mc cannot decode are left out."""
    words = [w for b in blocks for w in b.words]
    text = "".join(" ".join(f"0x{(w >> s) & 0xFF:02x}" for s in (0, 8, 16, 24)) + "\n" for w in words)
    proc = subprocess.run([tool("llvm-mc"), "--disassemble", "-triple=aarch64", f"-mattr={MATTR}"], input=text,
                          capture_output=True, text=True, check=False)
    bad = {int(m) - 1 for m in re.findall(r"<stdin>:(\d+):\d+: warning: invalid instruction encoding", proc.stderr)}
    asm = [line.split("//")[0].strip() for line in proc.stdout.splitlines()]
    asm = iter(line for line in asm if line and not line.startswith("."))
    out, i = [], 0
    for b in blocks:
        out.append([next(asm) for k in range(i, i + len(b.words)) if k not in bad])
        i += len(b.words)
    return out


def _mca(asm: list[list[str]], cpu: str) -> list[float]:
    regions = "".join(f"# LLVM-MCA-BEGIN b{i}\n" + "".join(f"{line}\n" for line in block) + "# LLVM-MCA-END\n"
                      for i, block in enumerate(asm))  # ends with a newline: llvm-mca drops an unterminated last region
    proc = subprocess.run([tool("llvm-mca"), "-mtriple=aarch64", f"-mcpu={cpu}", f"-mattr={MATTR}", "--json",
                           f"-iterations={ITERATIONS}", "--skip-unsupported-instructions=any", "-"], input=regions,
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise McaError(f"llvm-mca -mcpu={cpu}: {(proc.stderr.strip().splitlines() or ['failed'])[-1]}")
    got = {r["Name"]: r["SummaryView"] for r in json.loads(proc.stdout)["CodeRegions"]}
    return [got[f"b{i}"]["TotalCycles"] / got[f"b{i}"]["Iterations"] if f"b{i}" in got else 0.0
            for i in range(len(asm))]


def block_cycles(blocks: list[Block], cpu: str, cache: dict[str, float] | None = None) -> list[float]:
    """Cycles per execution of each block on `cpu` (llvm-mca's steady state); `cache` (block key -> cycles) is
    read and filled, so that a block is costed once per model."""
    cache = {} if cache is None else cache
    todo = [b for b in blocks if b.key not in cache]
    for start in range(0, len(todo), CHUNK):
        part = todo[start:start + CHUNK]
        asm = disassemble(part)
        keep = [(b, a) for b, a in zip(part, asm) if a]
        for (b, _), c in zip(keep, _mca([a for _, a in keep], cpu) if keep else []):
            cache[b.key] = c
        for b, a in zip(part, asm):
            cache.setdefault(b.key, float(len(b.words)))  # nothing decodable: one cycle per word
    return [cache[b.key] for b in blocks]


@dataclass(frozen=True)
class Cycles:
    cycles: float  # per inference, core only (every load an L1 hit)
    instructions: float
    covered: float  # share of the instructions in costed blocks
    costed_blocks: int
    top: list[dict]  # the hottest blocks: pc, share of instructions, cycles per execution, IPC


def hot(blocks: dict[str, Block], coverage: float = COVERAGE, total: float | None = None
        ) -> tuple[list[Block], float]:
    """The hottest blocks (executions x instructions) up to `coverage` of all instructions (`total`, when `blocks`
    holds only the hottest of them), and that total."""
    ranked = sorted(blocks.values(), key=lambda b: -b.execs * len(b.words))
    total = total or sum(b.execs * len(b.words) for b in ranked)
    out, acc = [], 0.0
    for b in ranked:
        if acc >= coverage * total:
            break
        out.append(b)
        acc += b.execs * len(b.words)
    return out, total


def cycles(blocks: dict[str, Block], cpu: str, cache: dict[str, float] | None = None,
           coverage: float = COVERAGE, total: float | None = None) -> Cycles:
    """Cycles per inference: the hottest blocks costed and weighted by executions, the cold rest at their CPI."""
    chosen, total = hot(blocks, coverage, total)
    per = block_cycles(chosen, cpu, cache)
    instr = sum(b.execs * len(b.words) for b in chosen)
    cyc = sum(b.execs * c for b, c in zip(chosen, per))
    top = [{"pc": f"{b.pc:x}", "share": b.execs * len(b.words) / total, "cycles_per_exec": c,
            "ipc": len(b.words) / c if c else 0.0} for b, c in zip(chosen[:5], per[:5])]
    return Cycles(cyc + (total - instr) * (cyc / instr if instr else 1.0), total, instr / total if total else 0.0,
                  len(chosen), top)
