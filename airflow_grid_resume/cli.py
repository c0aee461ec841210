"""``grid-resume``: the project's command line. Subcommands import only what they need."""

from __future__ import annotations

import sys
from collections.abc import Sequence

USAGE = """usage: grid-resume COMMAND [OPTIONS]

commands:
  agent       run one spot session of a run (the on-instance supervisor)
  demo        the whole lifecycle on the local spot cloud with a real Airflow (what `make demo` runs)
  emulator    run the local spot cloud (EC2 + S3 + capacity faults + instance fabric) in the foreground
  imds        run the EC2 metadata-service emulator (spot notices, faults) in the foreground
  build-agent write the agent zipapp to a file
  gc          keep a run's newest checkpoints and delete what none of them references (dry run by default)
  reap        list (--apply: terminate) instances tagged by grid-resume whose expiry passed or whose run ended
  simulate    replay spot availability traces through a deadline policy: cost and finish per start
  verify      run a training command through seeded spot interruptions locally and say if it resumes
"""


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "agent":
        from airflow_grid_resume.agent.cli import main as agent_main

        return agent_main(rest)
    if command == "demo":
        from airflow_grid_resume.demo.run import main as demo_main

        return demo_main(rest)
    if command == "emulator":
        from airflow_grid_resume.emulator.cloud import main as emulator_main

        return emulator_main(rest)
    if command == "imds":
        from airflow_grid_resume.emulator.imds import main as imds_main

        return imds_main(rest)
    if command == "verify":
        from airflow_grid_resume.verify.cli import main as verify_main

        return verify_main(rest)
    if command == "simulate":
        from airflow_grid_resume.policy.cli import main as simulate_main

        return simulate_main(rest)
    if command == "gc":
        from airflow_grid_resume.ledger.gc import main as gc_main

        return gc_main(rest)
    if command == "reap":
        from airflow_grid_resume.reaper import main as reap_main

        return reap_main(rest)
    if command == "build-agent":
        from airflow_grid_resume.agent.bundle import build_zipapp

        target = rest[0] if rest else "dist/grid-resume-agent.pyz"
        print(build_zipapp(target))
        return 0
    print(f"grid-resume: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
