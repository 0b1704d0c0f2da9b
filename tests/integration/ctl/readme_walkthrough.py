#!/usr/bin/env python3
"""Runs README.md's walkthrough literally and checks its documented result.

    python3 tests/integration/ctl/readme_walkthrough.py BIN_DIR REPO_ROOT

The walkthrough is the fenced ```sh block directly after the line
`<!-- walkthrough: tested by tests/integration/ctl/readme_walkthrough.py -->` in REPO_ROOT/README.md.
Its commands run in order in ONE bash process (so `X=$(...)` and `export` carry over). The only
changes made to the text, all of them here:

  1. PATH starts with BIN_DIR (a directory, or several joined by ':'); agent-mesh-server, agent-meshd
     and agent-meshctl must be found there, never in an installed copy further down PATH.
  2. The fixed ports 8080, 9001 and 9002 become free ephemeral ports picked by the harness.
  3. The directory prefix `/tmp/mesh` becomes `<fresh temp dir>/mesh` (not created beforehand, as
     /tmp/mesh would not exist on a fresh machine).
  4. The commands run in REPO_ROOT (so `scripts/echo_server.py` resolves), with HOME set to an empty
     temp directory and every inherited MESH_* variable removed, so nothing from the caller's
     ~/.mesh or environment takes part.
  5. Comment lines and ` # ...` trailers are not executed; a line ending in `\\` continues on the next.
  6. Every command's stdin is /dev/null unless the command redirects it itself.
  7. A line ending in ` &` is a background process: its stdout and stderr go to log files, and the
     next line runs only once its first stdout line has appeared (polled, READY_TIMEOUT_S), which
     must be `listening http://...` or `agent <id> socket <path>`.
  8. Every other command must exit 0 within COMMAND_TIMEOUT_S. The stdout of the block's last
     command is compared, as JSON, with the JSON on the comment line that follows it in the README
     (`# {...}`). Nothing is retried.

On failure the failing command, its output and the tail of every background log are printed. All
background processes (the whole process group of the bash process) are killed at the end. Exit 0 on
success, 1 on failure, 2 on bad usage or a README without the walkthrough. Python standard library only.
"""

import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import log_tail

MARKER = "<!-- walkthrough: tested by tests/integration/ctl/readme_walkthrough.py -->"
FIXED_PORTS = ("8080", "9001", "9002")
FIXED_DIR = "/tmp/mesh"
REQUIRED_BINARIES = ("agent-mesh-server", "agent-meshd", "agent-meshctl")

READY_TIMEOUT_S = 20.0     # a background process's first stdout line
COMMAND_TIMEOUT_S = 30.0   # one foreground command (the final request included)
KILL_GRACE_S = 5.0         # SIGTERM to SIGKILL at the end
POLL_INTERVAL_S = 0.05     # how often a log file is looked at while waiting for it
LOG_TAIL_LINES = 40

READY_LINE = re.compile(r"^(listening https?://\S+|agent \S+ socket \S+)$")
RC_TAG = "__walkthrough_rc__"
BG_TAG = "__walkthrough_bg__"


class WalkthroughError(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# Reading the README


def strip_trailer(line):
    """The line without a `# ...` comment (a `#` that starts a word outside quotes)."""
    quote = None
    escaped = False
    for i, ch in enumerate(line):
        if escaped:
            escaped = False
            continue
        if ch == "\\" and quote != "'":
            escaped = True
            continue
        if quote:
            if ch == quote:
                quote = None
            continue
        if ch in ("'", '"'):
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def read_walkthrough(readme_path):
    """[(readme line number, command text)], and the expected JSON of the last command."""
    with open(readme_path, encoding="utf-8") as readme:
        lines = readme.read().splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == MARKER)
    except StopIteration:
        raise WalkthroughError("%s has no line %r" % (readme_path, MARKER)) from None
    if start + 1 >= len(lines) or lines[start + 1].strip() != "```sh":
        raise WalkthroughError("the line after the walkthrough marker (line %d) must be ```sh" % (start + 1))
    block = []  # (line number, text)
    for number in range(start + 2, len(lines)):
        if lines[number].strip() == "```":
            break
        block.append((number + 1, lines[number]))
    else:
        raise WalkthroughError("the walkthrough block opened at line %d is never closed" % (start + 2))

    commands = []
    expected_after = {}  # index of a command -> the comment lines right after it
    pending = None
    for number, text in block:
        if pending is not None:  # continuation of the previous line
            pending = (pending[0], pending[1] + "\n" + text)
        elif text.lstrip().startswith("#") or not text.strip():
            if commands:
                expected_after.setdefault(len(commands) - 1, []).append((number, text.strip()))
            continue
        else:
            pending = (number, text)
        if pending[1].endswith("\\"):
            continue
        command = strip_trailer(pending[1])
        if command:
            commands.append((pending[0], command))
        pending = None
    if pending is not None:
        raise WalkthroughError("line %d ends in a continuation but the block ends" % pending[0])
    if not commands:
        raise WalkthroughError("the walkthrough block has no commands")

    after_last = expected_after.get(len(commands) - 1, [])
    if not after_last or not after_last[0][1].startswith("#"):
        raise WalkthroughError("the last command (line %d) must be followed by a `# <JSON>` line" % commands[-1][0])
    number, comment = after_last[0]
    try:
        expected = json.loads(comment[1:].strip())
    except ValueError as error:
        raise WalkthroughError("line %d is not `# <JSON>`: %s" % (number, error)) from None
    return commands, expected


# ---------------------------------------------------------------------------------------------
# The transformation


def free_ports(count):
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [str(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def transform(command, ports, mesh_dir):
    for fixed, port in ports.items():
        command = re.sub(r"(?<![0-9])%s(?![0-9])" % fixed, port, command)
    return re.sub(r"%s(?![A-Za-z0-9_.-])" % re.escape(FIXED_DIR), mesh_dir, command)


def is_background(command):
    return command.endswith(" &") and not command.endswith("&&")


# ---------------------------------------------------------------------------------------------
# Running


def tail(path, lines=LOG_TAIL_LINES):
    return log_tail.tail(path, lines)


def alive(pid):
    """True while pid exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


class Shell:
    """One bash process fed command by command on its stdin; it reports on its stdout."""

    def __init__(self, cwd, env, work_dir):
        self.work_dir = work_dir
        self.stderr_path = os.path.join(work_dir, "bash.stderr")
        self.stderr_file = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            ["bash", "--noprofile", "--norc"], cwd=cwd, env=env, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self.stderr_file, start_new_session=True)
        self.buffer = b""
        self.background = []  # (line number, command, pid, stdout log, stderr log)

    def send(self, text):
        try:
            self.proc.stdin.write(text.encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise WalkthroughError("bash exited early") from None

    def read_tagged(self, tag, timeout):
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while True:
            while b"\n" in self.buffer:
                line, self.buffer = self.buffer.split(b"\n", 1)
                text = line.decode(errors="replace")
                if text.startswith(tag + " "):
                    return text[len(tag) + 1:]
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    raise WalkthroughError("bash exited (status %s)" % self.proc.wait())
                self.buffer += chunk

    def run(self, index, command):
        out = os.path.join(self.work_dir, "cmd-%02d.stdout" % index)
        err = os.path.join(self.work_dir, "cmd-%02d.stderr" % index)
        # The newline before `}` keeps the group intact whatever the command ends with.
        self.send("{ %s\n} </dev/null >'%s' 2>'%s'; echo \"%s $?\"\n" % (command, out, err, RC_TAG))
        status = self.read_tagged(RC_TAG, COMMAND_TIMEOUT_S)
        return (None if status is None else int(status)), out, err

    def start(self, index, line_number, command):
        out = os.path.join(self.work_dir, "bg-%02d.stdout.log" % index)
        err = os.path.join(self.work_dir, "bg-%02d.stderr.log" % index)
        self.send("{ %s\n} </dev/null >'%s' 2>'%s' & echo \"%s $!\"\n" % (command[:-1].rstrip(), out, err, BG_TAG))
        pid = self.read_tagged(BG_TAG, COMMAND_TIMEOUT_S)
        if pid is None:
            raise WalkthroughError("bash did not start the background command")
        self.background.append((line_number, command, int(pid), out, err))
        return int(pid), out, err

    def logs(self):
        parts = []
        for line_number, command, pid, out, err in self.background:
            parts.append("--- background (README line %d, pid %d%s): %s\n--- stdout:\n%s\n--- stderr:\n%s" % (
                line_number, pid, "" if alive(pid) else ", exited", command, tail(out), tail(err)))
        parts.append("--- bash's own stderr:\n%s" % tail(self.stderr_path))
        return "\n".join(parts)

    def stop(self):
        """SIGTERM to the process group and every background pid, SIGKILL after KILL_GRACE_S."""
        pgid = self.proc.pid
        pids = [entry[2] for entry in self.background]

        def signal_all(sig):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                pass
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass

        def group_gone():
            self.proc.poll()
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return not any(alive(pid) for pid in pids)
            return False

        signal_all(signal.SIGTERM)
        deadline = time.monotonic() + KILL_GRACE_S
        while not group_gone() and time.monotonic() < deadline:
            time.sleep(POLL_INTERVAL_S)
        if not group_gone():
            signal_all(signal.SIGKILL)
        try:
            self.proc.wait(timeout=KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            pass
        self.stderr_file.close()


def wait_ready(pid, out_log):
    """The first stdout line of a background process, polled with a deadline."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        try:
            with open(out_log, encoding="utf-8", errors="replace") as f:
                content = f.read()
        except FileNotFoundError:
            content = ""
        if "\n" in content:
            return content.split("\n", 1)[0]
        if not alive(pid):
            # One more look: it may have written the line and exited in between.
            with open(out_log, encoding="utf-8", errors="replace") as f:
                content = f.read()
            if "\n" in content:
                return content.split("\n", 1)[0]
            raise WalkthroughError("it exited before printing its first stdout line")
        if time.monotonic() >= deadline:
            raise WalkthroughError("no first stdout line within %.0f s" % READY_TIMEOUT_S)
        time.sleep(POLL_INTERVAL_S)


def read_text(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def check_binaries(bin_dirs):
    for name in REQUIRED_BINARIES:
        if not any(os.access(os.path.join(d, name), os.X_OK) for d in bin_dirs):
            raise WalkthroughError("%s is not in BIN_DIR (%s)" % (name, ":".join(bin_dirs)))


def main(argv):
    if len(argv) != 3:
        sys.stderr.write("usage: readme_walkthrough.py BIN_DIR REPO_ROOT\n")
        return 2
    bin_dirs = [os.path.abspath(d) for d in argv[1].split(":") if d]
    repo_root = os.path.abspath(argv[2])
    try:
        commands, expected = read_walkthrough(os.path.join(repo_root, "README.md"))
        check_binaries(bin_dirs)
    except (WalkthroughError, OSError) as error:
        print("readme_walkthrough: %s" % error, file=sys.stderr)
        return 2

    temp_root = tempfile.mkdtemp(prefix="mesh-rw-", dir="/tmp" if os.path.isdir("/tmp") else None)
    mesh_dir = os.path.join(temp_root, "mesh")
    work_dir = os.path.join(temp_root, "harness")
    home_dir = os.path.join(temp_root, "home")
    os.makedirs(work_dir)
    os.makedirs(home_dir)
    ports = dict(zip(FIXED_PORTS, free_ports(len(FIXED_PORTS))))

    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    env["PATH"] = os.pathsep.join(bin_dirs + [env.get("PATH", "/usr/bin:/bin")])
    env["HOME"] = home_dir
    print("readme_walkthrough: %d commands, ports %s, %s -> %s" % (
        len(commands), ", ".join("%s->%s" % kv for kv in ports.items()), FIXED_DIR, mesh_dir))

    shell = Shell(repo_root, env, work_dir)
    ok = False
    current = None
    try:
        last_stdout = None
        for index, (line_number, original) in enumerate(commands):
            command = transform(original, ports, mesh_dir)
            current = (line_number, original, command, None, None, None)
            started = time.monotonic()
            if is_background(command):
                pid, out, err = shell.start(index, line_number, command)
                current = (line_number, original, command, None, out, err)
                try:
                    first = wait_ready(pid, out)
                except WalkthroughError as error:
                    raise WalkthroughError("background command: %s" % error) from None
                if not READY_LINE.match(first):
                    raise WalkthroughError("background command: first stdout line %r is neither "
                                           "`listening http://...` nor `agent <id> socket <path>`" % first)
                print("  [%5.2fs] line %d: %s\n           ready: %s" % (
                    time.monotonic() - started, line_number, original, first))
                continue
            status, out, err = shell.run(index, command)
            current = (line_number, original, command, status, out, err)
            if status is None:
                raise WalkthroughError("no exit within %.0f s" % COMMAND_TIMEOUT_S)
            if status != 0:
                raise WalkthroughError("exit status %d" % status)
            print("  [%5.2fs] line %d: %s" % (time.monotonic() - started, line_number, original))
            last_stdout = read_text(out)

        try:
            actual = json.loads(last_stdout)
        except ValueError as error:
            raise WalkthroughError("the last command's stdout is not JSON (%s)" % error) from None
        if actual != expected:
            raise WalkthroughError("the last command's stdout differs from the README:\n  expected %s\n  actual   %s"
                                   % (json.dumps(expected, sort_keys=True), json.dumps(actual, sort_keys=True)))
        print("readme_walkthrough: OK, the last command printed %s" % json.dumps(actual))
        ok = True
    except WalkthroughError as error:
        print("readme_walkthrough: FAILED: %s" % error, file=sys.stderr)
        if current is not None:
            line_number, original, command, status, out, err = current
            print("--- failing command (README line %d): %s" % (line_number, original), file=sys.stderr)
            print("--- as run: %s" % command, file=sys.stderr)
            if status is not None:
                print("--- exit status: %d" % status, file=sys.stderr)
            if out and not is_background(command):
                print("--- its stdout:\n%s\n--- its stderr:\n%s" % (tail(out), tail(err)), file=sys.stderr)
        print(shell.logs(), file=sys.stderr)
    finally:
        shell.stop()
    if ok:
        shutil.rmtree(temp_root, ignore_errors=True)
    else:
        print("readme_walkthrough: files kept in %s" % temp_root, file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
