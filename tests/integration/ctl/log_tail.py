"""The end of a process's log file, for failure messages of the Python ctl tests."""


def tail(path, lines):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            content = f.read().splitlines()
    except FileNotFoundError:
        return "(no file)"
    if not content:
        return "(empty)"
    cut = content[-lines:]
    prefix = "(... %d lines before)\n" % (len(content) - len(cut)) if len(content) > len(cut) else ""
    return prefix + "\n".join(cut)
