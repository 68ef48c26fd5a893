"""Peak resident memory of the running process, for the benchmarks' tables (Linux; standard library only, so the
original code's environment can import it too)."""


def peak_rss_mb() -> float:
    """The process's resident high-water mark (VmHWM) in MB; NaN where /proc is not there."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def reset_peak() -> None:
    """Start the high-water mark again from the current resident size (where the kernel allows it)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass
