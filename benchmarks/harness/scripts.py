"""Presets that call a stand-alone benchmark script (``SCRIPT_PRESETS``: decoding_bench.py, tokenizers_bench.py)
and wrap its output in the harness's json / md reports."""

import json
import os
import shlex
import subprocess
import sys
import time

from benchmarks.harness.common import BENCH_DIR, ROOT, say
from benchmarks.presets import SCRIPT_PRESETS


def run_script_preset(name, args, meta, stem):
    script, defaults = SCRIPT_PRESETS[name]
    device = "cuda" if args.device.startswith("cuda") else "cpu"
    extra = shlex.split(args.script_args) if args.script_args else defaults[device]
    os.makedirs(args.out, exist_ok=True)
    json_path = os.path.join(args.out, stem + ".json")
    raw = json_path + ".raw"
    cmd = [sys.executable, os.path.join(BENCH_DIR, script)] + extra + ["--out", raw]
    if name == "decoding":
        cmd += ["--device", args.device]
    else:
        cmd += ["--device", device]
    say("running " + " ".join(shlex.quote(c) for c in cmd))
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    meta["wall_s"] = time.perf_counter() - start
    print(proc.stdout[-6000:], proc.stderr[-3000:] if proc.returncode else "", flush=True)
    result = None
    if os.path.isfile(raw):
        with open(raw) as f:
            result = json.load(f)
        os.remove(raw)
    report = {"meta": dict(meta, script=script, script_command=" ".join(cmd), returncode=proc.returncode),
              "result": result}
    with open(json_path, "w") as f:
        json.dump(report, f, indent=1)
    md_path = os.path.join(args.out, stem + ".md")
    tables = "\n".join(line for line in proc.stdout.splitlines() if line.startswith(("|", "**")))
    with open(md_path, "w") as f:
        f.write(f"# Benchmark `{name}` -- {meta['date']}\n\n- command: `{meta['command']}`\n"
                f"- script: `{report['meta']['script_command']}`\n- git commit: {meta['git_commit']}\n"
                f"- machine: {meta['machine']['cpu']}, {meta['machine']['cores']} cores, GPU: "
                f"{meta['machine']['gpu'] or 'none'}\n"
                "- versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) + "\n\n" + tables + "\n"
                + (f"\n**exit code {proc.returncode}**\n```\n{proc.stderr[-2000:]}\n```\n" if proc.returncode else ""))
    say(f"wrote {json_path} and {md_path}")
    return proc.returncode
