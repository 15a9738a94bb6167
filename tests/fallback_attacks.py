"""Attacks on the sandbox's fallback mode (init accounting, no cgroup), as program sources.

Plain data (no pytest, no fixtures), so that any harness can run them: the hostile suites here (root
with `cgroups=False` and the unprivileged mode), and a cgroup v2 guest. Each Python attack is a
`run()` entry for `Sandbox.run_python`; each C++ attack a whole program for `CppJudge`. Sizes are
relative to `ATTACK_LIMIT_MIB`: every attack tries to hold about twice that much for seconds, and
must end as a failed run ("memory limit exceeded") or an MLE verdict instead of a result.
"""

from __future__ import annotations

ATTACK_LIMIT_MIB = 256
"""The whole-run memory limit these attacks are sized against (they hold ~2x this)."""

_HOLD = ("def hold(mib):\n    b = bytearray(mib << 20)\n    b[::4096] = b'x' * len(b[::4096])\n    return b\n")

# Unix socketpair buffers are kernel memory: no process map shows them. Children each fill both
# ends of many pairs (raising SO_SNDBUF to what the host allows) until 2x the limit is in flight.
SOCKET_BUFFERS = (
    "import os, socket, time\n"
    "def fill(target):\n"
    "    pairs, held = [], 0\n"
    "    while held < target and len(pairs) < 100:\n"
    "        a, b = socket.socketpair()\n"
    "        pairs.append((a, b))\n"
    "        for s in (a, b):\n"
    "            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 << 20)\n"
    "            s.setblocking(False)\n"
    "            try:\n"
    "                while held < target:\n"
    "                    held += s.send(b'x' * (1 << 16))\n"
    "            except BlockingIOError:\n"
    "                pass\n"
    "    return pairs, held\n"
    "def run():\n"
    f"    target = {2 * ATTACK_LIMIT_MIB} << 20\n"
    "    share = target // 6\n"
    "    for _ in range(6):\n"
    "        if os.fork() == 0:\n"
    "            keep = fill(share)\n"
    "            time.sleep(30)\n"
    "            os._exit(0)\n"
    "    time.sleep(4)\n"
    "    return 'held %d MiB in socket buffers' % (target >> 20)\n"
)

# prctl(PR_SET_DUMPABLE, 0) makes a process's smaps_rollup unreadable to an init without
# CAP_SYS_PTRACE over it; children forked afterwards inherit it.
HIDDEN_CHILDREN = (
    "import ctypes, os, time\n" + _HOLD +
    "def run():\n"
    "    ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0\n"
    "    for _ in range(4):\n"
    "        if os.fork() == 0:\n"
    f"            b = hold({ATTACK_LIMIT_MIB // 2})\n"
    "            time.sleep(30)\n"
    "            os._exit(0)\n"
    "    time.sleep(4)\n"
    f"    return 'held {2 * ATTACK_LIMIT_MIB} MiB in hidden children'\n"
)

# A thread group whose leader has exited (pthread_exit) while another thread holds memory: the
# leader is a zombie, and /proc/PID/smaps_rollup answers ESRCH.
ZOMBIE_LEADERS = (
    "import ctypes, os, threading, time\n" + _HOLD +
    "def run():\n"
    "    for _ in range(4):\n"
    "        if os.fork() == 0:\n"
    "            def keep():\n"
    "                time.sleep(0.3)  # the leader has exited by then\n"
    f"                b = hold({ATTACK_LIMIT_MIB // 2})\n"
    "                time.sleep(30)\n"
    "                os._exit(0)\n"
    "            threading.Thread(target=keep).start()\n"
    "            ctypes.CDLL(None).pthread_exit(None)  # ctypes drops the GIL: the thread lives on\n"
    "    time.sleep(4)\n"
    f"    return 'held {2 * ATTACK_LIMIT_MIB} MiB behind zombie leaders'\n"
)

# Both at once: children not dumpable whose leaders exit, so neither the group's maps nor the
# leader's status show the memory (only a live thread's status does).
HIDDEN_ZOMBIE_LEADERS = (
    "import ctypes, os, threading, time\n" + _HOLD +
    "def run():\n"
    "    ctypes.CDLL(None).prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE 0\n"
    "    for _ in range(4):\n"
    "        if os.fork() == 0:\n"
    "            def keep():\n"
    "                time.sleep(0.3)\n"
    f"                b = hold({ATTACK_LIMIT_MIB // 2})\n"
    "                time.sleep(30)\n"
    "                os._exit(0)\n"
    "            threading.Thread(target=keep).start()\n"
    "            ctypes.CDLL(None).pthread_exit(None)\n"
    "    time.sleep(4)\n"
    f"    return 'held {2 * ATTACK_LIMIT_MIB} MiB, hidden twice'\n"
)

# Pipe buffers are kernel memory too, and sock_diag does not list pipes: every child fills as many
# pipes as its descriptors allow, each grown to the host's pipe-max-size. The kernel's per-user
# pipe budget (fs.pipe-user-pages-soft) is what bounds them: the run reports what it managed.
PIPE_BUFFERS = (
    "import fcntl, os, time\n"
    "def fill():\n"
    "    held, pipes = 0, []\n"
    "    for _ in range(100):\n"
    "        try:\n"
    "            r, w = os.pipe()\n"
    "        except OSError:\n"
    "            break\n"
    "        try:\n"
    "            fcntl.fcntl(w, 1031, 1 << 20)  # F_SETPIPE_SZ\n"
    "        except OSError:\n"
    "            pass\n"
    "        os.set_blocking(w, False)\n"
    "        try:\n"
    "            while True:\n"
    "                held += os.write(w, b'x' * 65536)\n"
    "        except BlockingIOError:\n"
    "            pass\n"
    "        pipes.append((r, w))\n"
    "    return held, pipes\n"
    "def run():\n"
    "    total = 0\n"
    "    for _ in range(8):\n"
    "        r, w = os.pipe()\n"
    "        if os.fork() == 0:\n"
    "            held, keep = fill()\n"
    "            os.write(w, str(held).encode().ljust(20))\n"
    "            time.sleep(30)\n"
    "            os._exit(0)\n"
    "        total += int(os.read(r, 20))\n"
    "    return total\n"
)

# SysV message queues live in the run's IPC namespace, in no process: 32000 queues of 16 KiB each
# by default, far more than any limit.
MESSAGE_QUEUES = (
    "import ctypes, os\n"
    "def run():\n"
    "    libc = ctypes.CDLL(None, use_errno=True)\n"
    "    message = ctypes.create_string_buffer(8 + 8000)\n"
    "    message[0] = 1  # mtype\n"
    "    held = 0\n"
    f"    while held < {2 * ATTACK_LIMIT_MIB} << 20:\n"
    "        q = libc.msgget(0, 0o1600)  # IPC_PRIVATE | IPC_CREAT\n"
    "        if q < 0:\n"
    "            raise OSError(ctypes.get_errno(), 'msgget: ' + os.strerror(ctypes.get_errno()))\n"
    "        while libc.msgsnd(q, message, 8000, 0o4000) == 0:  # IPC_NOWAIT\n"
    "            held += 8000\n"
    "    return 'held %d MiB in message queues' % (held >> 20)\n"
)

# POSIX message queues: RLIMIT_MSGQUEUE bounds them per user, but only where nothing raised it.
POSIX_QUEUES = (
    "import ctypes, os\n"
    "def run():\n"
    "    libc = ctypes.CDLL(None, use_errno=True)\n"
    "    q = libc.mq_open(b'/ttdmark', 0o102, 0o600, None)  # O_CREAT | O_RDWR\n"
    "    if q < 0:\n"
    "        raise OSError(ctypes.get_errno(), 'mq_open: ' + os.strerror(ctypes.get_errno()))\n"
    "    return 'opened a POSIX message queue'\n"
)

# Where memfds are granted (GPU problems) without a cgroup: a memfd passed into a socket's queue
# (SCM_RIGHTS) and closed is in no descriptor table and no map.
MEMFD_IN_FLIGHT = (
    "import os, socket\n"
    "def run():\n"
    "    a, b = socket.socketpair()\n"
    "    fd = os.memfd_create('x')\n"
    "    os.ftruncate(fd, 32 << 20)  # under the file size limit; in flight it needs no pages to hide\n"
    "    os.write(fd, b'x')\n"
    "    socket.send_fds(a, [b'x'], [fd])\n"
    "    os.close(fd)\n"
    "    return 'a memfd in flight'\n"
)

# What a GPU problem's memfd grant is for: a small memfd, as CUDA makes one when it initialises.
SMALL_MEMFD = (
    "import os\n"
    "def run():\n"
    "    fd = os.memfd_create('cuda')\n"
    "    os.write(fd, b'x' * 4096)\n"
    "    os.close(fd)\n"
    "    return 'memfd ok'\n"
)

# More than the limit in granted memfds, each under the file size limit, held open.
MEMFD_HOARD = (
    "import os, time\n"
    "def run():\n"
    "    chunk, fds = b'x' * (1 << 20), []\n"
    f"    for _ in range({2 * ATTACK_LIMIT_MIB} // 32):\n"
    "        fd = os.memfd_create('hoard')\n"
    "        for _ in range(32):\n"
    "            os.write(fd, chunk)\n"
    "        fds.append(fd)\n"
    "    time.sleep(2)\n"
    f"    return 'held {2 * ATTACK_LIMIT_MIB} MiB in memfds'\n"
)

# kill(1, SIGINT) and friends: signals init of a pid namespace receives only where it installed a
# handler. Without one, the run ends normally and reports its status.
SIGNAL_INIT = (
    "import os, signal\n"
    "def run():\n"
    "    sent = []\n"
    "    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGQUIT):\n"
    "        try:\n"
    "            os.kill(1, sig)\n"
    "            sent.append(sig.name)\n"
    "        except OSError:\n"
    "            pass\n"
    "    import time\n"
    "    time.sleep(0.3)\n"
    "    return sent\n"
)

# What the program can learn about the host from its own and init's process records.
PROCESS_RECORDS = (
    "def run():\n"
    "    seen = {}\n"
    "    for path in ('/proc/self/environ', '/proc/self/cmdline', '/proc/1/cmdline', '/proc/1/environ'):\n"
    "        try:\n"
    "            seen[path] = open(path, 'rb').read().decode(errors='replace')\n"
    "        except OSError:\n"
    "            seen[path] = None\n"
    "    return seen\n"
)

# How many processes the program may really have: itself plus the children it can fork.
COUNT_PROCESSES = (
    "import os, time\n"
    "def run():\n"
    "    n = 0\n"
    "    for _ in range(1000):\n"
    "        try:\n"
    "            if os.fork() == 0:\n"
    "                time.sleep(30)\n"
    "                os._exit(0)\n"
    "            n += 1\n"
    "        except OSError:\n"
    "            break\n"
    "    return n + 1\n"
)

# The C++ judge's MLE: children hide (zombie leaders) while holding memory, and every process
# resets its kernel peak (`5 > /proc/thread-self/clear_refs`) before it exits, so neither
# init's polling nor the reaped children's ru_maxrss would see the peak.
CPP_HIDDEN_PEAK = r"""
#include <cstdio>
#include <cstring>
#include <cstdlib>
#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>
#include <fcntl.h>
static const size_t kBytes = size_t(MIB) << 20;
static void reset_peak() {
  int fd = open("/proc/thread-self/clear_refs", O_WRONLY);
  if (fd >= 0) { if (write(fd, "5", 1) == 1) fputs("peak reset\n", stderr); close(fd); }
}
static void* hold(void*) {
  volatile char* p = (volatile char*)malloc(kBytes);
  for (size_t i = 0; i < kBytes; i += 4096) p[i] = 1;
  sleep(2);
  free((void*)p);
  reset_peak();
  _exit(0);
}
int main() {
  for (int i = 0; i < 2; i++)
    if (fork() == 0) {
      pthread_t t;
      pthread_create(&t, nullptr, hold, nullptr);
      pthread_exit(nullptr);
    }
  while (wait(nullptr) > 0) {}
  reset_peak();
  printf("held %d MiB twice\n", MIB);
  return 0;
}
"""


def cpp_hidden_peak(mib: int) -> str:
    """CPP_HIDDEN_PEAK holding `mib` MiB in each of two children."""
    return f"#define MIB {int(mib)}\n" + CPP_HIDDEN_PEAK


# clear_refs on its own: a program that may write it can lower the peak the kernel keeps.
CPP_CLEAR_REFS = r"""
#include <cstdio>
#include <fcntl.h>
#include <unistd.h>
int main() {
  const char* paths[] = {"/proc/self/clear_refs", "/proc/thread-self/clear_refs", "/proc/1/clear_refs"};
  int opened = 0;
  for (const char* p : paths) {
    int fd = open(p, O_WRONLY);
    if (fd >= 0) { if (write(fd, "5", 1) == 1) opened++; close(fd); }
  }
  printf("%d", opened);
  return opened ? 3 : 0;
}
"""
