"""A user's comparator for verify's --compare-command: ``compare_json.py [--ignore KEY]... REFERENCE RESUMED``.

Exit 0 when both JSON files are equal once the ignored top-level keys are dropped; else 1, naming the keys."""

import argparse
import json
import sys

parser = argparse.ArgumentParser()
parser.add_argument("--ignore", action="append", default=[])
parser.add_argument("reference")
parser.add_argument("resumed")
args = parser.parse_args()
docs = []
for name in (args.reference, args.resumed):
    with open(name) as fh:
        docs.append({k: v for k, v in json.load(fh).items() if k not in args.ignore})
differ = sorted(k for k in set(docs[0]) | set(docs[1]) if docs[0].get(k) != docs[1].get(k))
if differ:
    print(f"keys differ: {', '.join(differ)}", file=sys.stderr)
    sys.exit(1)
print(f"equal once {', '.join(args.ignore) or 'nothing'} is ignored", file=sys.stderr)
