#!/usr/bin/env python3
"""agent-meshctl in a real terminal: tmux panes driven like a person at a keyboard.

    python3 tests/integration/ctl/terminal_test.py BIN_DIR REPO_ROOT

BIN_DIR is a directory (or several joined by ':') holding agent-meshctl and agent-mesh-server. The
test starts its own agent-mesh-server (port 0, --bootstrap, device login against the GitHub stand-in
tests/support/github-standin.mjs) and runs each command in a pane of a private tmux server
(`tmux -L <unique>`, 120x30), typed as `agent-meshctl ...; echo "exit=$?"` so the pane shows the exit
status. Everything waits by polling the pane or a log file with a deadline (constants below).

Cases (cli-mcp-web.md "meshctl": progress on anything that waits only when stderr is a terminal;
Ctrl-C is clean):
  a. `login`: shows `Open <verification_uri> and enter the code <CODE>` and a spinner line
     `Waiting ...` that changes in place; Ctrl-C ends it within CTRL_C_LOGIN_TIMEOUT_S, non-zero,
     with a message and no crash output; config.toml holds no token.
  b. `login`, approved through the stand-in's /_control/approve: exit 0, config.toml (0600, in a 0700
     MESH_HOME) holds a token that the registry accepts as that GitHub user.
  c. `login` with stderr redirected to a file (not a terminal), approved: exit 0, no spinner
     frames (no carriage return, no escape sequence) in what it wrote.
  d. `up --local-agent ... --name bob --capabilities echo` after `login --token-stdin` (bootstrap
     token): shows `Agent ID: <id>`, `agent <id> socket <path>` and `Connected to <relay>`, the card
     is online; Ctrl-C stops it within CTRL_C_UP_TIMEOUT_S with exit 0 and a line saying it stopped.

Exit 0 when every case passed, 1 otherwise (each failure prints the pane and the server logs).
Python standard library only.
"""

import json
import os
import re
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
import log_tail

PANE_WIDTH, PANE_HEIGHT = 120, 30
START_TIMEOUT_S = 15.0          # a background process's first stdout line
PROMPT_TIMEOUT_S = 5.0          # the pane's shell prompt
CODE_TIMEOUT_S = 10.0           # login shows its code and spinner
SPINNER_CHANGE_TIMEOUT_S = 3.0  # the spinner line changes
CTRL_C_LOGIN_TIMEOUT_S = 5.0    # login exits after Ctrl-C
APPROVED_TIMEOUT_S = 15.0       # login exits after the approval
UP_READY_TIMEOUT_S = 20.0       # up shows its ID, socket and relay connection
ONLINE_TIMEOUT_S = 5.0          # the registry sees the agent online
CTRL_C_UP_TIMEOUT_S = 10.0      # up exits after Ctrl-C
DIAGNOSE_TIMEOUT_S = 3.0        # after a missing exit= line: what the shell says
COMMAND_TIMEOUT_S = 10.0        # commands run outside tmux (login --token-stdin, tmux itself)
HTTP_TIMEOUT_S = 5.0
KILL_GRACE_S = 5.0
POLL_INTERVAL_S = 0.1
LOG_TAIL_LINES = 30

GITHUB_LOGIN, GITHUB_ID = "octo-tester", 4242
CRASH_MARKERS = ("terminate called", "what():", "Aborted", "core dumped", "Segmentation fault",
                 "Traceback", "AddressSanitizer", "runtime error:", "ThreadSanitizer")
EXIT_LINE = re.compile(r"^exit=(\d+)\s*$", re.M)
CODE_LINE = re.compile(r"Open (\S+) and enter the code (\S+)")


class CaseFailure(Exception):
    pass


def tail(path, lines=LOG_TAIL_LINES):
    return log_tail.tail(path, lines)


def wait_until(what, timeout, probe):
    """Polls probe() until it returns something truthy; CaseFailure after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise CaseFailure("%s: not within %.0f s" % (what, timeout))
        time.sleep(POLL_INTERVAL_S)


def http(method, url, body=None, token=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as answer:
            return answer.status, json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


class Background:
    """A process whose stdout/stderr go to log files; ready once its first stdout line is there."""

    def __init__(self, name, argv, log_dir, cwd=None, env=None):
        self.name = name
        self.out = os.path.join(log_dir, name + ".stdout.log")
        self.err = os.path.join(log_dir, name + ".stderr.log")
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=err, start_new_session=True)

    def first_line(self):
        def probe():
            with open(self.out, encoding="utf-8", errors="replace") as f:
                content = f.read()
            if "\n" in content:
                return content.split("\n", 1)[0]
            if self.proc.poll() is not None:
                raise CaseFailure("%s exited (status %s) before its first line:\n%s" % (
                    self.name, self.proc.returncode, tail(self.err)))
            return None
        return wait_until("%s's first stdout line" % self.name, START_TIMEOUT_S, probe)

    def listening_url(self):
        line = self.first_line()
        match = re.match(r"^listening (http://127\.0\.0\.1:\d+)$", line)
        if not match:
            raise CaseFailure("%s's first line is %r, not `listening http://127.0.0.1:<port>`" % (self.name, line))
        return match.group(1)

    def logs(self):
        return "--- %s stdout:\n%s\n--- %s stderr:\n%s" % (self.name, tail(self.out), self.name, tail(self.err))

    def stop(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=KILL_GRACE_S)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


class Tmux:
    """A private tmux server (its own socket); one session per case, each a bash with given env."""

    def __init__(self, env):
        self.socket = "mesh-ctl-test-%d-%s" % (os.getpid(), secrets.token_hex(4))
        self.env = env

    def tmux(self, *args, check=True):
        result = subprocess.run(["tmux", "-L", self.socket, "-f", "/dev/null", *args], env=self.env,
                                capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
        if check and result.returncode != 0:
            raise CaseFailure("tmux %s: %s" % (" ".join(args), result.stderr.strip()))
        return result.stdout

    def new_session(self, name, env, rcfile):
        settings = []
        for key, value in env.items():
            settings += ["-e", "%s=%s" % (key, value)]
        self.tmux("new-session", "-d", "-s", name, "-x", str(PANE_WIDTH), "-y", str(PANE_HEIGHT), *settings,
                  "bash --noprofile --rcfile %s" % rcfile)
        wait_until("the shell prompt in tmux session %s" % name, PROMPT_TIMEOUT_S,
                   lambda: self.capture(name).strip().endswith("$"))

    def capture(self, name):
        """The pane's whole history and screen, wrapped lines joined."""
        return self.tmux("capture-pane", "-p", "-J", "-S", "-", "-t", name)

    def type_line(self, name, text):
        self.tmux("send-keys", "-t", name, "-l", "--", text)
        self.tmux("send-keys", "-t", name, "Enter")

    def ctrl_c(self, name):
        self.tmux("send-keys", "-t", name, "C-c")

    def kill(self):
        self.tmux("kill-server", check=False)


class Test:
    def __init__(self, bin_dirs, repo_root):
        self.bin_dirs = bin_dirs
        self.repo_root = repo_root
        self.root = tempfile.mkdtemp(prefix="mesh-tt-", dir="/tmp" if os.path.isdir("/tmp") else None)
        self.logs = os.path.join(self.root, "logs")
        os.makedirs(self.logs)
        os.makedirs(os.path.join(self.root, "home"))
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("MESH_", "TMUX"))}
        self.env["PATH"] = os.pathsep.join(bin_dirs + [self.env.get("PATH", "/usr/bin:/bin")])
        self.env["HOME"] = os.path.join(self.root, "home")
        self.processes = []
        self.tmux = Tmux(self.env)
        # The panes' bash reads only this (an imported PS1 is not honoured by bash).
        self.rcfile = os.path.join(self.root, "bashrc")
        with open(self.rcfile, "w") as f:
            f.write("PS1='$ '\nunset HISTFILE\n")
        self.meshctl = self.find("agent-meshctl")

    def find(self, name):
        for d in self.bin_dirs:
            if os.access(os.path.join(d, name), os.X_OK):
                return os.path.join(d, name)
        raise CaseFailure("%s is not in BIN_DIR (%s)" % (name, ":".join(self.bin_dirs)))

    def start(self, name, argv, **kwargs):
        process = Background(name, argv, self.logs, env=self.env, **kwargs)
        self.processes.append(process)
        return process

    def start_services(self):
        standin = self.start("github-standin", [
            "node", os.path.join(self.repo_root, "tests/support/github-standin.mjs"), "--interval-ms", "300",
            "--client-id", "c", "--client-secret", "s"])
        self.standin_url = standin.listening_url()
        secret_file = os.path.join(self.root, "oauth-client-secret")
        with open(secret_file, "w") as f:
            f.write("s\n")
        os.chmod(secret_file, 0o600)
        self.data_dir = os.path.join(self.root, "server")
        server = self.start("agent-mesh-server", [
            self.find("agent-mesh-server"), "--listen", "127.0.0.1:0", "--data-dir", self.data_dir, "--bootstrap",
            "--ip-connect-rate", "1000", "--oauth-client-id", "c", "--oauth-client-secret-file", secret_file,
            "--oauth-device-url", self.standin_url + "/login/device/code",
            "--oauth-token-url", self.standin_url + "/login/oauth/access_token",
            "--oauth-user-url", self.standin_url + "/user"])
        self.server_url = server.listening_url()
        with open(os.path.join(self.data_dir, "bootstrap-token")) as f:
            self.bootstrap_token = f.read().strip()
        echo = self.start("echo-server", [sys.executable, os.path.join(self.repo_root, "scripts/echo_server.py"),
                                          "0", "bob"])
        self.echo_url = echo.listening_url()

    def mesh_home(self, case):
        return os.path.join(self.root, "home-" + case)  # not created: the CLI makes it

    def session(self, case):
        """A tmux session for `case` with MESH_HOME and MESH_CP_URL set."""
        home = self.mesh_home(case)
        self.tmux.new_session(case, {"MESH_HOME": home, "MESH_CP_URL": self.server_url}, self.rcfile)
        return home

    def pane(self, case):
        return self.tmux.capture(case)

    def wait_pane(self, case, what, timeout, pattern):
        regex = pattern if isinstance(pattern, re.Pattern) else re.compile(pattern, re.M)
        return wait_until(what, timeout, lambda: regex.search(self.pane(case)))

    def wait_exit(self, case, timeout, what):
        """The exit status the pane's `echo "exit=$?"` printed."""
        try:
            return int(self.wait_pane(case, what, timeout, EXIT_LINE).group(1))
        except CaseFailure as failure:
            missing = failure
        # Maybe bash dropped the `; echo` because the program died of SIGINT: ask the shell.
        self.tmux.type_line(case, 'echo "after=$?"')
        try:
            status = self.wait_pane(case, "", DIAGNOSE_TIMEOUT_S, r"^after=(\d+)\s*$").group(1)
        except CaseFailure:
            raise CaseFailure("%s (it is still running)" % missing) from None
        raise CaseFailure("%s (the shell is back with $?=%s: the program was killed by a signal instead of "
                          "exiting)" % (missing, status))

    def check_no_crash(self, text, what):
        for marker in CRASH_MARKERS:
            if marker in text:
                raise CaseFailure("%s shows %r" % (what, marker))

    def config_token(self, home):
        path = os.path.join(home, "config.toml")
        if not os.path.exists(path):
            return None
        with open(path, "rb") as f:
            return tomllib.load(f).get("token")

    def start_login(self, case):
        home = self.session(case)
        self.tmux.type_line(case, 'agent-meshctl login; echo "exit=$?"')
        match = self.wait_pane(case, "`Open <url> and enter the code <code>`", CODE_TIMEOUT_S, CODE_LINE)
        url, code = match.group(1), match.group(2)
        if url != self.standin_url + "/login/device":
            raise CaseFailure("the verification URL is %s, want the provider's %s/login/device" % (url, self.standin_url))
        if not re.fullmatch(r"[A-Z]{4}-[A-Z]{4}", code):
            raise CaseFailure("the code %r is not the provider's user code" % code)
        return home, code

    # --- the cases ------------------------------------------------------------------------------

    def case_a_login_ctrl_c(self):
        home, _ = self.start_login("a")
        waiting = lambda: [line for line in self.pane("a").splitlines() if "Waiting" in line]
        first = wait_until("a spinner line containing `Waiting`", CODE_TIMEOUT_S, waiting)[0]
        wait_until("the spinner line changing (from %r)" % first, SPINNER_CHANGE_TIMEOUT_S,
                   lambda: waiting() and waiting()[0] != first)
        if len(waiting()) != 1:
            raise CaseFailure("the spinner writes new lines instead of redrawing one: %r" % waiting())
        sent = time.monotonic()
        self.tmux.ctrl_c("a")
        status = self.wait_exit("a", CTRL_C_LOGIN_TIMEOUT_S, "login exiting after Ctrl-C")
        elapsed = time.monotonic() - sent
        if status == 0:
            raise CaseFailure("login exited 0 after Ctrl-C")
        after = self.pane("a").split(CODE_LINE.search(self.pane("a")).group(0), 1)[1]
        self.check_no_crash(after, "the pane after Ctrl-C")
        message = [line.strip() for line in after.splitlines()
                   if line.strip() and "Waiting" not in line and not EXIT_LINE.match(line)
                   and line.strip() not in ("$", "^C")]
        if not message:
            raise CaseFailure("login printed no message after Ctrl-C")
        if self.config_token(home) is not None:
            raise CaseFailure("config.toml holds a token after a cancelled login")
        return "exit %d after %.1f s, message %r" % (status, elapsed, " / ".join(message))

    def approve(self, code):
        status, answer = http("POST", self.standin_url + "/_control/approve",
                              {"user_code": code, "login": GITHUB_LOGIN, "id": GITHUB_ID})
        if status != 200:
            raise CaseFailure("the stand-in refused the approval of %s: %s %s" % (code, status, answer))

    def check_saved_login(self, home):
        token = self.config_token(home)
        if not token:
            raise CaseFailure("config.toml has no token after the login")
        mode = stat.S_IMODE(os.stat(os.path.join(home, "config.toml")).st_mode)
        if mode != 0o600:
            raise CaseFailure("config.toml has mode %o, want 600" % mode)
        mode = stat.S_IMODE(os.stat(home).st_mode)
        if mode != 0o700:
            raise CaseFailure("MESH_HOME has mode %o, want 700" % mode)
        status, me = http("GET", self.server_url + "/api/v1/users/me", token=token)
        if status != 200 or me.get("user", {}).get("login") != GITHUB_LOGIN:
            raise CaseFailure("the saved token is not %s's: GET /users/me -> %s %s" % (GITHUB_LOGIN, status, me))

    def case_b_login_approved(self):
        home, code = self.start_login("b")
        self.approve(code)
        status = self.wait_exit("b", APPROVED_TIMEOUT_S, "login exiting after the approval")
        if status != 0:
            raise CaseFailure("login exited %d after the approval" % status)
        self.check_no_crash(self.pane("b"), "the pane")
        self.check_saved_login(home)
        return "exit 0, token saved and accepted as %s" % GITHUB_LOGIN

    def case_c_login_no_terminal(self):
        home = self.mesh_home("c")
        env = dict(self.env, MESH_HOME=home, MESH_CP_URL=self.server_url)
        out_path, err_path = os.path.join(self.logs, "c.stdout"), os.path.join(self.logs, "c.stderr")
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = subprocess.Popen([self.meshctl, "login"], env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        try:
            def code():
                with open(err_path, encoding="utf-8", errors="replace") as f:
                    match = CODE_LINE.search(f.read())
                if not match and proc.poll() is not None:
                    raise CaseFailure("login exited %d without a code:\n%s" % (proc.returncode, tail(err_path)))
                return match
            self.approve(wait_until("the code on (non-terminal) stderr", CODE_TIMEOUT_S, code).group(2))
            try:
                status = proc.wait(timeout=APPROVED_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                raise CaseFailure("login did not exit within %.0f s of the approval" % APPROVED_TIMEOUT_S) from None
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        with open(out_path, "rb") as f:
            written = f.read()
        with open(err_path, "rb") as f:
            written += f.read()
        if status != 0:
            raise CaseFailure("login exited %d:\n%s" % (status, written.decode(errors="replace")))
        if b"\r" in written or b"\x1b" in written:
            raise CaseFailure("with stderr not a terminal, login still drew progress: %r" % written[:600])
        self.check_saved_login(home)
        return "exit 0, no spinner frames in its output"

    def case_d_up_ctrl_c(self):
        home = self.mesh_home("d")
        env = dict(self.env, MESH_HOME=home, MESH_CP_URL=self.server_url)
        with open(os.path.join(self.data_dir, "bootstrap-token"), "rb") as token:
            result = subprocess.run([self.meshctl, "login", "--token-stdin"], env=env, stdin=token,
                                    capture_output=True, timeout=COMMAND_TIMEOUT_S)
        if result.returncode != 0:
            raise CaseFailure("login --token-stdin exited %d: %s" % (result.returncode, result.stderr.decode()))
        status, info = http("GET", self.server_url + "/api/v1/info")
        relay = info.get("relay_url") if status == 200 else None

        self.session("d")
        self.tmux.type_line("d", 'agent-meshctl up --local-agent %s --name bob --capabilities echo; echo "exit=$?"'
                            % self.echo_url)
        agent_id = self.wait_pane("d", "`Agent ID: <id>`", UP_READY_TIMEOUT_S, r"Agent ID: (\S+)").group(1)
        socket_line = self.wait_pane("d", "`agent <id> socket <path>`", UP_READY_TIMEOUT_S, r"^agent (\S+) socket (\S+)")
        connected = self.wait_pane("d", "`Connected to <relay>`", UP_READY_TIMEOUT_S, r"Connected to (\S+)").group(1)
        if socket_line.group(1) != agent_id:
            raise CaseFailure("`Agent ID: %s` but `agent %s socket ...`" % (agent_id, socket_line.group(1)))
        if relay and connected != relay:
            raise CaseFailure("`Connected to %s`, but the registry's relay is %s" % (connected, relay))
        if not os.path.exists(socket_line.group(2)):
            raise CaseFailure("meshd's socket %s does not exist" % socket_line.group(2))

        def online():
            code, card = http("GET", self.server_url + "/api/v1/agents/" + agent_id, token=self.bootstrap_token)
            return code == 200 and card.get("online") is True
        wait_until("the registry showing %s online" % agent_id, ONLINE_TIMEOUT_S, online)

        before = self.pane("d")
        sent = time.monotonic()
        self.tmux.ctrl_c("d")
        status = self.wait_exit("d", CTRL_C_UP_TIMEOUT_S, "up exiting after Ctrl-C")
        elapsed = time.monotonic() - sent
        pane = self.pane("d")
        if status != 0:
            raise CaseFailure("up exited %d after Ctrl-C, want 0" % status)
        after = pane[len(before.rstrip()):] if pane.startswith(before.rstrip()) else pane
        self.check_no_crash(pane, "the pane")
        if not re.search(r"(?i)stopped", after):
            raise CaseFailure("after Ctrl-C the pane does not say that it stopped:\n%s" % after)
        stopped = [line.strip() for line in after.splitlines()
                   if line.strip() not in ("", "$") and not EXIT_LINE.match(line)]
        return "agent %s online via %s; Ctrl-C: exit 0 after %.1f s, %r" % (
            agent_id[:8] + "...", connected, elapsed, " / ".join(stopped))

    def run(self):
        cases = [("a", "login: code, spinner, Ctrl-C", self.case_a_login_ctrl_c),
                 ("b", "login approved in the browser", self.case_b_login_approved),
                 ("c", "login with stderr not a terminal", self.case_c_login_no_terminal),
                 ("d", "up, then Ctrl-C", self.case_d_up_ctrl_c)]
        failures = 0
        try:
            self.start_services()
        except CaseFailure as failure:
            print("terminal_test: could not start the services: %s" % failure, file=sys.stderr)
            print("\n".join(p.logs() for p in self.processes), file=sys.stderr)
            return 1
        for key, title, case in cases:
            started = time.monotonic()
            try:
                detail = case()
                print("ok:   (%s) %s [%.1f s]: %s" % (key, title, time.monotonic() - started, detail))
            except (CaseFailure, subprocess.TimeoutExpired, OSError, ValueError) as failure:
                failures += 1
                print("FAIL: (%s) %s: %s" % (key, title, failure), file=sys.stderr)
                try:
                    pane = self.pane(key)
                except CaseFailure:
                    pane = "(no pane)"
                print("--- pane %s:\n%s" % (key, pane.rstrip()), file=sys.stderr)
                print("\n".join(p.logs() for p in self.processes), file=sys.stderr)
        return 1 if failures else 0

    def cleanup(self, ok):
        self.tmux.kill()
        for process in self.processes:
            process.stop()
        if ok:
            shutil.rmtree(self.root, ignore_errors=True)
        else:
            print("terminal_test: files kept in %s" % self.root, file=sys.stderr)


def main(argv):
    if len(argv) != 3:
        sys.stderr.write("usage: terminal_test.py BIN_DIR REPO_ROOT\n")
        return 2
    for tool in ("tmux", "node"):
        if shutil.which(tool) is None:
            print("terminal_test: %s is not installed (scripts/setup installs it)" % tool, file=sys.stderr)
            return 1
    try:
        test = Test([os.path.abspath(d) for d in argv[1].split(":") if d], os.path.abspath(argv[2]))
    except CaseFailure as failure:
        print("terminal_test: %s" % failure, file=sys.stderr)
        return 2
    status = 1
    try:
        status = test.run()
    finally:
        test.cleanup(status == 0)
    print("terminal_test: %s" % ("OK" if status == 0 else "FAILED"))
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv))
