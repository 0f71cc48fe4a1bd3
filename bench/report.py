"""What the bench/ scripts record beside their tables: the machine, and the JSON file."""

import json
import os
import platform
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cpu_info():
    """CPU model, logical cores and clock (GHz) from /proc/cpuinfo."""
    model, mhz, logical, physical = "unknown", None, 0, set()
    physical_id = core_id = None
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            key, _, value = (part.strip() for part in line.partition(":"))
            if key == "processor":
                logical += 1
            elif key == "model name":
                model = value
            elif key == "cpu MHz" and mhz is None:
                mhz = float(value)
            elif key == "physical id":
                physical_id = value
            elif key == "core id":
                core_id = value
                physical.add((physical_id, core_id))
    return {"model": model, "logical_cpus": logical,
            "physical_cores": len(physical) or logical,
            "ghz": mhz / 1000 if mhz else None}


def git_state():
    """The commit benchmarked and the files that differed from it."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True,
                              text=True).stdout.strip()
    return {"commit": git("rev-parse", "HEAD"),
            "modified_files": git("diff", "--name-only", "HEAD").splitlines()}


def versions(rows):
    """{tensorflow, keras} as the first child that ran reported them."""
    row = next((r for r in rows if "tensorflow" in r), {})
    return {"tensorflow": row.get("tensorflow"), "keras": row.get("keras")}


def machine(cpu, rows, load_before, load_after, **extra):
    """The JSON record of where and on what a table was measured."""
    return {"cpu_model": cpu["model"], "logical_cpus": cpu["logical_cpus"],
            "physical_cores": cpu["physical_cores"], "ghz": cpu["ghz"], **extra,
            "machine": platform.machine(), "python": platform.python_version(),
            **versions(rows), "loadavg_before": load_before, "loadavg_after": load_after,
            "git": git_state()}


def machine_line(cpu, rows, load_before, load_after, seconds, peak=None):
    """One line under a table: CPU, versions, load before/after, how long it took."""
    found = versions(rows)
    clock = f" at {cpu['ghz']} GHz: peak {peak:.1f} GFLOP/s fp32" if peak else ""
    return (f"CPU {cpu['model']}, {cpu['logical_cpus']} cores{clock}; TF "
            f"{found['tensorflow']}, Keras {found['keras']}; load average (1/5/15 min) "
            f"{'/'.join(f'{x:.2f}' for x in load_before)} before, "
            f"{'/'.join(f'{x:.2f}' for x in load_after)} after; {seconds:.0f} s in all")


def write_results(path, payload):
    """Writes `payload` as indented JSON to `path` (creating its folder) and says so."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(payload, f, indent=2)
    print(f"wrote {os.path.relpath(path)}")
