"""Agent benchmarks against moto's server on loopback, with the AWS CLI as the reference in the same run.

    python benchmarks/agent_bench.py --aws .venv-awscli/bin/aws [--only NAME ...] [--quick]

Prints a markdown table (and --json FILE writes the numbers). Targets (docs/benchmarks.md):
  first sync 10,000 files (2-18 KB) / aws s3 sync up         <= 0.2
  re-sync after 1% of them changed / aws s3 sync             <= 0.1
  re-sync, nothing changed / aws s3 sync                     <= 0.05
  restore into an empty dir / aws s3 sync down               <= 0.2
  first sync and restore of a 1 GiB file / aws               <= 0.4 and <= 0.05 (the v1 agent's 0.37 and 0.04)
  notice visible -> child SIGTERM, median    <= 1.5 s at the default 1 s poll
  200 MB of output: the command's wall time under the agent / alone (stdout to a file)  <= 1.1
S3 requests of the agent's syncs and restores are counted (in-process runs of the same code).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import boto3

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from airflow_grid_resume.agent.restore import Restorer  # noqa: E402
from airflow_grid_resume.agent.scan import HashCache  # noqa: E402
from airflow_grid_resume.agent.sync import Syncer  # noqa: E402
from airflow_grid_resume.emulator.imds import MetadataService  # noqa: E402
from airflow_grid_resume.emulator.moto_server import MotoServer  # noqa: E402
from airflow_grid_resume.ledger.s3client import make_s3_client  # noqa: E402
from airflow_grid_resume.ledger.store import RunLedger  # noqa: E402
from airflow_grid_resume.ledger.uri import parse_s3_uri  # noqa: E402

MiB = 1024 * 1024


def timed(cmd: list[str], env: dict[str, str], **kw) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, **kw)
    return time.perf_counter() - started


class Bench:
    def __init__(self, aws: str, work: Path, quick: bool, baseline: str | None = None) -> None:
        self.aws = aws
        self.baseline = baseline
        self.work = work
        self.quick = quick
        self.rows: list[dict] = []
        self.moto = MotoServer().start()
        self.env = {
            **os.environ,
            "AWS_ENDPOINT_URL": self.moto.endpoint_url,
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        os.environ.update({k: v for k, v in self.env.items() if k.startswith("AWS_")})
        self.bucket = f"bench-{uuid.uuid4().hex[:8]}"
        boto3.client("s3").create_bucket(Bucket=self.bucket)

    def close(self) -> None:
        self.moto.stop()

    def row(self, name: str, agent: float, reference: float, target: float, unit: str = "s") -> None:
        ratio = agent / reference if reference else float("nan")
        self.rows.append(
            {
                "benchmark": name,
                "agent": agent,
                "reference": reference,
                "ratio": ratio,
                "target": target,
                "unit": unit,
                "ok": ratio <= target,
            }
        )
        print(
            f"  {name}: agent {agent:.2f} {unit}, reference {reference:.2f} {unit}, ratio {ratio:.2f} "
            f"(target <= {target})",
            flush=True,
        )

    def aws_cmd(self, *args: str) -> list[str]:
        return [self.aws, "s3", *args, "--endpoint-url", self.moto.endpoint_url, "--only-show-errors"]

    def agent_cmd(self, run: str, workdir: Path, *command: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "airflow_grid_resume.agent",
            "--run-uri",
            run,
            "--workdir",
            str(workdir),
            "--no-imds",
            "--quiet",
            "--",
            *(command or ["true"]),
        ]

    def baseline_env(self) -> dict[str, str]:
        """The environment that runs the agent from the ``--baseline`` source tree instead (run with
        another working directory: ``python -m`` puts the current one first on the path)."""
        return {**self.env, "PYTHONPATH": str(self.baseline)}

    def against_baseline(self, label: str, data: Path) -> None:
        """This agent against an earlier version (``--baseline DIR``, e.g. ``git archive 01d88dc``),
        same data, same server, whole sessions: first sync, then restore into an empty directory.
        Each is run twice in the order old, new, new, old (the machine's load drifts), best of two."""
        times: dict[str, dict[str, list[float]]] = {"old": {"up": [], "down": []}, "new": {"up": [], "down": []}}
        for i, which in enumerate(("old", "new", "new", "old")):
            env, cwd = (self.baseline_env(), self.work) if which == "old" else (self.env, None)
            run = f"s3://{self.bucket}/{which}-{i}-{uuid.uuid4().hex[:6]}"
            dst = self.work / f"{which}-{i}-restore"
            times[which]["up"].append(timed(self.agent_cmd(run, data), env, cwd=cwd))
            times[which]["down"].append(timed(self.agent_cmd(run, dst), env, cwd=cwd))
            assert _same_tree(data, dst), f"the {which} agent's restored tree differs from the source"
            shutil.rmtree(dst)
        for step, what in (("up", "first sync"), ("down", "restore into empty dir")):
            new, old = min(times["new"][step]), min(times["old"][step])
            self.row(f"{what}, {label}: this agent / the baseline agent (best of 2)", new, old, 1.0)
            self.rows[-1]["samples"] = times

    # -- data sets -------------------------------------------------------------------------
    def one_big_file(self) -> Path:
        d = self.work / "big"
        d.mkdir()
        size = (256 if self.quick else 1024) * MiB
        with open(d / "model.ckpt", "wb") as fh:
            for _ in range(size // (16 * MiB)):
                fh.write(os.urandom(16 * MiB))
        return d

    def many_small_files(self) -> Path:
        """10,000 files of 2-18 KB (about 98 MiB), 500 per directory."""
        d = self.work / "small"
        n = 2000 if self.quick else 10_000
        sizes = random.Random(10).choices(range(2_000, 18_001), k=n)
        for i, size in enumerate(sizes):
            sub = d / f"shard-{i // 500:03d}"
            sub.mkdir(parents=True, exist_ok=True)
            (sub / f"sample-{i:05d}.bin").write_bytes(os.urandom(size))
        return d

    def counted_ledger(self, name: str) -> tuple[RunLedger, dict[str, int]]:
        """A ledger whose client counts its S3 requests by operation."""
        counts: dict[str, int] = {}
        client = make_s3_client()

        def count(model, **_) -> None:
            counts[model.name] = counts.get(model.name, 0) + 1

        client.meta.events.register("before-call.s3", count)
        return RunLedger(client, parse_s3_uri(f"s3://{self.bucket}/{name}-{uuid.uuid4().hex[:6]}")), counts

    def requests(self, label: str, files: int, counts: dict[str, int]) -> None:
        total = sum(counts.values())
        detail = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        self.rows.append({"benchmark": f"S3 requests, {label}", "requests": total, "files": files, "detail": detail})
        print(f"  S3 requests, {label}: {total} for {files} files ({detail})", flush=True)
        counts.clear()

    # -- benchmarks ------------------------------------------------------------------------
    def transfer(self, label: str, data: Path, *, small: bool) -> None:
        """Whole agent sessions against whole ``aws s3 sync`` runs; then, for small files, the
        in-process re-syncs (nothing changed, 1% changed) and the S3 requests of each step."""
        ref_prefix, run = f"s3://{self.bucket}/aws-{label}", f"s3://{self.bucket}/agent-{label}"
        files = sum(1 for p in data.rglob("*") if p.is_file())
        aws_up = timed(self.aws_cmd("sync", str(data), ref_prefix), self.env)
        agent_up = timed(self.agent_cmd(run, data), self.env)
        self.row(f"first sync, {label}", agent_up, aws_up, 0.2 if small else 0.4)
        ledger, counts = self.counted_ledger("resync")
        syncer = Syncer(ledger, str(data), session=1, cache=HashCache())
        syncer.sync("periodic")
        self.requests(f"first sync, {label}", files, counts)
        if small:
            aws_again = timed(self.aws_cmd("sync", str(data), ref_prefix), self.env)
            started = time.perf_counter()
            result = syncer.sync("periodic")
            agent_again = time.perf_counter() - started
            assert result.files_hashed == 0 and not result.committed, result
            self.row(f"re-sync nothing changed, {label}", agent_again, aws_again, 0.05)
            self.requests(f"re-sync nothing changed, {label}", files, counts)
            changed = sorted(p for p in data.rglob("*") if p.is_file())[::100]  # 1%
            for path in changed:
                path.write_bytes(os.urandom(path.stat().st_size))  # same size: the CLI sees the new mtime
            time.sleep(2.1)  # past the hash cache's racy window, as a periodic sync would be
            aws_changed = timed(self.aws_cmd("sync", str(data), ref_prefix), self.env)
            started = time.perf_counter()
            result = syncer.sync("periodic")
            agent_changed = time.perf_counter() - started
            assert result.files_hashed == len(changed) and result.committed, result
            self.row(f"re-sync after 1% changed ({len(changed)} files), {label}", agent_changed, aws_changed, 0.1)
            self.requests(f"re-sync after 1% changed, {label}", files, counts)
        run = f"s3://{ledger.location.bucket}/{ledger.location.prefix}"  # the newest state of the data
        aws_dst, agent_dst = self.work / f"aws-restore-{label[:5]}", self.work / f"agent-restore-{label[:5]}"
        aws_down = timed(self.aws_cmd("sync", ref_prefix, str(aws_dst)), self.env)
        agent_down = timed(self.agent_cmd(run, agent_dst), self.env)
        assert _same_tree(data, agent_dst), "restored tree differs from the source"
        assert _same_tree(data, aws_dst), "the CLI's restored tree differs from the source"
        self.row(f"restore into empty dir, {label}", agent_down, aws_down, 0.2 if small else 0.05)
        shutil.rmtree(agent_dst)
        counts.clear()
        Restorer(ledger, str(agent_dst)).restore()
        self.requests(f"restore, {label}", files, counts)
        shutil.rmtree(aws_dst)
        shutil.rmtree(agent_dst)

    def notice_latency(self, runs: int) -> None:
        probe = self.work / "sigterm_probe.py"
        probe.write_text(
            "import signal, sys, time\n"
            "def on_term(*_):\n"
            "    open('sigterm_at', 'w').write(repr(time.time()))\n"
            "    sys.exit(0)\n"
            "signal.signal(signal.SIGTERM, on_term)\n"
            "open('ready', 'w').close()\n"
            "time.sleep(600)\n"
        )
        latencies = []
        for i in range(runs):
            workdir = self.work / f"notice-{i}"
            with MetadataService() as imds:
                proc = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "airflow_grid_resume.agent",
                        "--run-uri",
                        f"s3://{self.bucket}/notice-{i}",
                        "--workdir",
                        str(workdir),
                        "--imds-endpoint",
                        imds.url,
                        "--quiet",
                        "--",
                        sys.executable,
                        str(probe),
                    ],
                    env=self.env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                while not (workdir / "ready").exists():
                    time.sleep(0.01)
                time.sleep(0.1 + (i % 10) / 10)  # spread the notice across the poll interval
                state = imds.schedule_notice(in_seconds=120)
                proc.wait(60)
            latencies.append(float((workdir / "sigterm_at").read_text()) - state["notice"]["visible_at"])
        median = statistics.median(latencies)
        self.rows.append(
            {
                "benchmark": "notice visible -> child SIGTERM (median)",
                "agent": median,
                "reference": None,
                "ratio": None,
                "target": 1.5,
                "unit": "s",
                "ok": median <= 1.5,
                "samples": latencies,
            }
        )
        print(f"  notice -> SIGTERM: median {median:.2f} s, max {max(latencies):.2f} s over {runs} runs", flush=True)

    def output_throughput(self) -> None:
        """The command's own wall time (it measures itself) printing 200 MB of lines: under the
        agent, against the same command alone with its stdout to a file (as `cmd > train.log`).
        The command alone with stdout to /dev/null, and the whole agent session, are reported too."""
        lines = 2_000_000  # 200 MB
        code = (
            "import sys, time\nt = time.perf_counter()\nw = sys.stdout.write\n"
            f"for i in range({lines}): w('%099d\\n' % i)\n"
            "sys.stdout.flush()\nopen('elapsed', 'w').write(repr(time.perf_counter() - t))\n"
        )
        cmd = [sys.executable, "-c", code]
        alone_dir = self.work / "out-alone"
        alone_dir.mkdir()

        def alone(stdout_path: str) -> float:
            with open(stdout_path, "wb") as out:
                subprocess.run(cmd, cwd=alone_dir, stdout=out, check=True)
            return float((alone_dir / "elapsed").read_text())

        def under_agent(i: int) -> tuple[float, float]:
            workdir = self.work / f"out-{i}"
            with open(os.devnull, "wb") as devnull:
                total = timed(
                    self.agent_cmd(f"s3://{self.bucket}/output-{i}", workdir, *cmd),
                    self.env,
                    stdout=devnull,
                    stderr=devnull,
                )
            return float((workdir / "elapsed").read_text()), total

        to_file = min(alone(str(alone_dir / "stdout.log")) for _ in range(3))
        to_null = min(alone(os.devnull) for _ in range(3))
        runs = [under_agent(i) for i in range(3)]
        command_time = min(r[0] for r in runs)
        self.row("200 MB of output: command under the agent / alone to a file", command_time, to_file, 1.1)
        print(
            f"  (same command alone to /dev/null: {to_null:.2f} s; whole agent session: "
            f"{min(r[1] for r in runs):.2f} s, including start-up, restore, final sync and log upload)",
            flush=True,
        )
        self.rows[-1]["alone_to_devnull"] = to_null
        self.rows[-1]["agent_session_total"] = min(r[1] for r in runs)


def _same_tree(a: Path, b: Path) -> bool:
    """Same files with the same bytes (bit-exact)."""
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    return files_a == files_b and all(_sha(a / p) == _sha(b / p) for p in files_a)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--aws", default=str(ROOT / ".venv-awscli" / "bin" / "aws"))
    parser.add_argument("--only", action="append", choices=["big", "small", "notice", "output", "baseline"])
    parser.add_argument("--quick", action="store_true", help="smaller data sets, for a smoke run")
    parser.add_argument("--notice-runs", type=int, default=10)
    parser.add_argument("--json", help="write the results to this file")
    parser.add_argument(
        "--baseline",
        help="source tree of an earlier version (git archive REV | tar -x -C DIR): the 1 GiB file is also "
        "synced and restored by that agent, and this one is compared with it",
    )
    args = parser.parse_args()
    only = set(args.only or ["big", "small", "notice", "output"])
    work = Path(tempfile.mkdtemp(prefix="grid-bench-"))
    bench = Bench(args.aws, work, args.quick, args.baseline)
    try:
        if "small" in only:
            n = "2,000" if args.quick else "10,000"
            bench.transfer(f"{n} files x 2-18 KB", bench.many_small_files(), small=True)
        if "big" in only or "baseline" in only:
            label = f"{'256 MiB' if args.quick else '1 GiB'} in one file"
            big = bench.one_big_file()
            if "big" in only:
                bench.transfer(label, big, small=False)
            if args.baseline:
                bench.against_baseline(label, big)
        if "notice" in only:
            bench.notice_latency(args.notice_runs)
        if "output" in only:
            bench.output_throughput()
    finally:
        bench.close()
        shutil.rmtree(work, ignore_errors=True)
    print("\n| benchmark | agent | reference (aws CLI / alone) | ratio | target | ok |\n|---|---|---|---|---|---|")
    for r in bench.rows:
        if "requests" in r:
            what = f"{r['requests']} requests: {r['detail']}"
            print(f"| {r['benchmark']} ({r['files']} files) | {what} | - | - | - | - |")
            continue
        ref = f"{r['reference']:.2f} s" if r["reference"] is not None else "-"
        ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else "-"
        target = f"<= {r['target']} s" if r["ratio"] is None else f"<= {r['target']}"
        print(f"| {r['benchmark']} | {r['agent']:.2f} s | {ref} | {ratio} | {target} | {'yes' if r['ok'] else 'NO'} |")
    if args.json:
        Path(args.json).write_text(json.dumps(bench.rows, indent=2))
    return 0 if all(r.get("ok", True) for r in bench.rows) else 1


if __name__ == "__main__":
    sys.exit(main())
