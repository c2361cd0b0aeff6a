"""Programs that try to get out of the `python` tool's sandbox, the review's attacks and more.

Each prints a line starting with ESCAPED when its attempt works; an attempt that fails prints
nothing of the kind (an exception, a killed process or a "blocked" line are all fine). Host-side
facts the programs aim at are filled in by `render` (@@NAME@@ markers, so the programs keep
their own braces): the server's data directory with its secret key and database, the project,
the virtualenv's site-packages, a marker file in the host's /tmp, a TCP and an abstract unix
listener on the host, a host process, and a secret in the server's environment.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Escape:
    name: str
    program: str


def render(program: str, facts: dict[str, str]) -> str:
    for key, value in facts.items():
        program = program.replace(f"@@{key}@@", value)
    return program


def _reads(name: str, path: str) -> Escape:
    return Escape(
        name,
        f"try:\n    data = open({path!r}, 'rb').read(64)\n"
        f"    print('ESCAPED: read', {path!r}, data[:16])\nexcept OSError as e:\n    print('blocked', e)\n",
    )


CORPUS: list[Escape] = [
    # --- the data directory, the project, the home and the host's files ---
    _reads("read the secret key", "@@DATA_DIR@@/secret_key"),
    _reads("read the database", "@@DATA_DIR@@/fireside.db"),
    _reads("read the project's files", "@@PROJECT@@/pyproject.toml"),
    _reads("read a file in the host's /tmp", "@@HOST_TMP_FILE@@"),
    _reads("read /etc/shadow", "/etc/shadow"),
    _reads("read kernel memory", "/proc/kcore"),
    _reads("read physical memory", "/dev/mem"),
    Escape(
        "open the database with sqlite3",
        "import sqlite3\ntry:\n"
        "    db = sqlite3.connect('file:@@DATA_DIR@@/fireside.db?mode=ro', uri=True)\n"
        "    print('ESCAPED: users', db.execute('select count(*) from users').fetchone())\n"
        "except sqlite3.Error as e:\n    print('blocked', e)\n",
    ),
    Escape(
        "list home directories",
        "import os\nfor d in ('/root', '/home', '/run', '/var/run', '@@DATA_DIR@@'):\n"
        "    try:\n        found = [n for n in os.listdir(d) if n != '.pyenv']\n"
        "    except OSError:\n        continue\n"
        "    if found:\n        print('ESCAPED: listed', d, found[:5])\n",
    ),
    # --- writes that would outlive the run or change the server ---
    Escape(
        "write into the data directory",
        "try:\n    open('@@DATA_DIR@@/planted', 'w').write('x')\n    print('ESCAPED: wrote')\n"
        "except OSError as e:\n    print('blocked', e)\n",
    ),
    Escape(
        "make a user an admin in the database",
        "import sqlite3\ntry:\n    db = sqlite3.connect('@@DATA_DIR@@/fireside.db')\n"
        "    db.execute(\"update users set role = 'admin'\")\n    db.commit()\n"
        "    print('ESCAPED: updated users')\nexcept sqlite3.Error as e:\n    print('blocked', e)\n",
    ),
    Escape(
        "plant a .pth file in site-packages",
        "import sysconfig\n"
        "for key in ('purelib', 'platlib', 'stdlib'):\n"
        "    path = sysconfig.get_paths()[key] + '/zz_fireside_planted.pth'\n"
        "    try:\n        open(path, 'w').write('import os\\n')\n"
        "        print('ESCAPED: planted', path)\n    except OSError:\n        pass\n",
    ),
    Escape(
        "plant into the venv's site-packages by path",
        "try:\n    open('@@SITE_PACKAGES@@/zz_fireside_planted.pth', 'w').write('import os\\n')\n"
        "    print('ESCAPED: planted')\nexcept OSError as e:\n    print('blocked', e)\n",
    ),
    Escape(
        "change the standard library",
        "import os\ntry:\n    with open(os.__file__, 'a') as fh:\n        fh.write('\\n')\n"
        "    print('ESCAPED: appended to', os.__file__)\nexcept OSError as e:\n    print('blocked', e)\n",
    ),
    Escape(
        "write to /usr",
        "try:\n    open('/usr/bin/zz_planted', 'w').write('x')\n    print('ESCAPED: wrote /usr')\n"
        "except OSError as e:\n    print('blocked', e)\n",
    ),
    Escape(
        "move itself out of its cgroup",
        "import glob, os\n"
        "for procs in glob.glob('/sys/fs/cgroup/**/cgroup.procs', recursive=True)[:50]:\n"
        "    try:\n        open(procs, 'w').write(str(os.getpid()))\n"
        "        print('ESCAPED: joined', procs)\n        break\n    except OSError:\n        pass\n",
    ),
    Escape(
        "trigger sysrq",
        "try:\n    open('/proc/sysrq-trigger', 'w').write('h')\n    print('ESCAPED: sysrq')\n"
        "except OSError as e:\n    print('blocked', e)\n",
    ),
    Escape(
        "protect itself from the OOM killer",
        "try:\n    with open('/proc/self/oom_score_adj', 'w') as fh:\n        fh.write('-1000')\n"
        "except OSError as e:\n    print('blocked', e)\n"
        "if open('/proc/self/oom_score_adj').read().strip() == '-1000':\n"
        "    print('ESCAPED: oom_score_adj -1000')\n",
    ),
    # --- the environment ---
    Escape(
        "read the server's environment",
        "import glob, os\nseen = [dict(os.environ)]\n"
        "for path in glob.glob('/proc/*/environ'):\n"
        "    try:\n        seen.append(open(path, 'rb').read().decode(errors='replace'))\n"
        "    except OSError:\n        pass\n"
        "if '@@ENV_SECRET@@' in repr(seen):\n    print('ESCAPED: found the secret')\n",
    ),
    Escape(
        "read the command lines of the host's processes",
        "import glob\nfor path in glob.glob('/proc/*/cmdline'):\n"
        "    try:\n        line = open(path, 'rb').read()\n    except OSError:\n        continue\n"
        "    if b'pytest' in line or b'uvicorn' in line or b'fireside' in line:\n"
        "        print('ESCAPED: saw', path, line[:60])\n",
    ),
    # --- the network ---
    Escape(
        "connect to a host TCP port",
        "import socket\ntry:\n"
        "    socket.create_connection(('127.0.0.1', @@TCP_PORT@@), timeout=2)\n"
        "    print('ESCAPED: connected')\nexcept OSError as e:\n    print('blocked', e)\n",
    ),
    Escape(
        "connect to PostgreSQL over TCP",
        "import socket\ntry:\n    socket.create_connection(('127.0.0.1', 5432), timeout=2)\n"
        "    print('ESCAPED: connected to PostgreSQL')\nexcept OSError as e:\n    print('blocked', e)\n",
    ),
    Escape(
        "connect to Redis over TCP",
        "import socket\ntry:\n    socket.create_connection(('127.0.0.1', 6379), timeout=2)\n"
        "    print('ESCAPED: connected to Redis')\nexcept OSError as e:\n    print('blocked', e)\n",
    ),
    Escape(
        "connect to the unix sockets of PostgreSQL and Redis",
        "import glob, socket\npaths = ['/run/postgresql/.s.PGSQL.5432', '/var/run/postgresql/.s.PGSQL.5432',\n"
        "         '/tmp/.s.PGSQL.5432', '/run/redis/redis-server.sock', '/var/run/redis/redis.sock']\n"
        "for path in paths + glob.glob('/run/**/*.sock', recursive=True):\n"
        "    s = socket.socket(socket.AF_UNIX)\n    try:\n        s.connect(path)\n"
        "        print('ESCAPED: connected to', path)\n    except OSError:\n        pass\n",
    ),
    Escape(
        "connect to a host abstract unix socket",
        "import socket\ns = socket.socket(socket.AF_UNIX)\ntry:\n"
        "    s.connect('\\0@@ABSTRACT@@')\n    print('ESCAPED: connected')\n"
        "except OSError as e:\n    print('blocked', e)\n",
    ),
    Escape(
        "the raw _socket module, loaded afresh",
        "import importlib.util\nspec = importlib.util.find_spec('_socket')\n"
        "raw = importlib.util.module_from_spec(spec)\nspec.loader.exec_module(raw)\n"
        "s = raw.socket(raw.AF_INET, raw.SOCK_STREAM)\ns.settimeout(2)\ntry:\n"
        "    s.connect(('127.0.0.1', @@TCP_PORT@@))\n    print('ESCAPED: connected')\n"
        "except OSError as e:\n    print('blocked', e)\n",
    ),
    Escape(
        "resolve and reach the internet",
        "import socket\ntry:\n    socket.create_connection(('pypi.org', 443), timeout=3)\n"
        "    print('ESCAPED: reached pypi.org')\nexcept OSError as e:\n    print('blocked', e)\n",
    ),
    Escape(
        "a network interface besides loopback",
        "import socket\nnames = [n for _, n in socket.if_nameindex()]\n"
        "if set(names) - {'lo'}:\n    print('ESCAPED: interfaces', names)\n",
    ),
    # --- processes, signals, privileges ---
    Escape(
        "signal a host process",
        "import os, signal\ntry:\n    os.kill(@@HOST_PID@@, signal.SIGTERM)\n"
        "    print('ESCAPED: signalled', @@HOST_PID@@)\nexcept OSError as e:\n    print('blocked', e)\n",
    ),
    Escape(
        "signal its parent",
        # Outside a PID namespace the parent is the server; inside it is bwrap's reaper.
        "import os, signal\nparent = os.getppid()\ntry:\n    os.kill(parent, signal.SIGKILL)\n"
        "except OSError as e:\n    print('blocked', e)\n",
    ),
    Escape(
        "ptrace a host process",
        "import ctypes, ctypes.util\nlibc = ctypes.CDLL(ctypes.util.find_library('c'), use_errno=True)\n"
        "PTRACE_ATTACH = 16\nif libc.ptrace(PTRACE_ATTACH, @@HOST_PID@@, 0, 0) == 0:\n"
        "    print('ESCAPED: attached to', @@HOST_PID@@)\nelse:\n    print('blocked', ctypes.get_errno())\n",
    ),
    Escape(
        "become root",
        "import os\ntry:\n    os.setuid(0)\n    print('ESCAPED: uid', os.getuid())\n"
        "except OSError as e:\n    print('blocked', e)\n",
    ),
    Escape(
        "make a user namespace of its own",
        "import ctypes, ctypes.util\nlibc = ctypes.CDLL(ctypes.util.find_library('c'), use_errno=True)\n"
        "CLONE_NEWUSER = 0x10000000\nif libc.unshare(CLONE_NEWUSER) == 0:\n"
        "    print('ESCAPED: new user namespace')\nelse:\n    print('blocked', ctypes.get_errno())\n",
    ),
    Escape(
        "mount a file system",
        "import ctypes, ctypes.util\nlibc = ctypes.CDLL(ctypes.util.find_library('c'), use_errno=True)\n"
        "if libc.mount(b'none', b'/tmp', b'tmpfs', 0, None) == 0:\n"
        "    print('ESCAPED: mounted')\nelse:\n    print('blocked', ctypes.get_errno())\n",
    ),
    Escape(
        "raise its own limits",
        "import resource\nfor limit in (resource.RLIMIT_AS, resource.RLIMIT_NPROC, resource.RLIMIT_CPU):\n"
        "    try:\n        resource.setrlimit(limit, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))\n"
        "        print('ESCAPED: raised', limit)\n    except (ValueError, OSError):\n        pass\n",
    ),
    Escape(
        "a fork bomb",
        "import os, time\nstarted = 0\ntry:\n    for _ in range(200):\n"
        "        if os.fork() == 0:\n            time.sleep(3)\n            os._exit(0)\n"
        "        started += 1\nexcept OSError:\n    pass\n"
        "if started > @@PROCESSES@@:\n    print('ESCAPED: started', started)\nprint('started', started)\n",
    ),
    Escape(
        "sixty subprocesses",
        "import subprocess\nstarted = []\ntry:\n    for _ in range(60):\n"
        "        started.append(subprocess.Popen(['sleep', '3']))\nexcept OSError:\n    pass\n"
        "if len(started) > @@PROCESSES@@:\n    print('ESCAPED: started', len(started))\n",
    ),
    Escape(
        "a thread bomb",
        "import threading, time\nstarted = 0\ntry:\n    for _ in range(100):\n"
        "        threading.Thread(target=time.sleep, args=(3,), daemon=True).start()\n"
        "        started += 1\nexcept RuntimeError:\n    pass\n"
        "if started > @@PROCESSES@@:\n    print('ESCAPED: threads', started)\n",
    ),
    Escape(
        "a daemon that outlives the run",
        "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
        "        os.execvp('sleep', ['sleep', '@@SURVIVOR_SECONDS@@'])\n    os._exit(0)\n"
        "time.sleep(0.3)\nprint('daemon started')\n",
    ),
    # --- memory, disk, time ---
    Escape(
        "one huge allocation",
        "x = bytearray(3 << 30)\nprint('ESCAPED: allocated', len(x))\n",
    ),
    Escape(
        "memory spread over processes",
        # Children each touch 200 MiB and report; what counts is what is held at once: the
        # reports of children still alive at the end.
        "import os, time\nr, w = os.pipe()\npids = []\nfor _ in range(8):\n"
        "    try:\n        pid = os.fork()\n    except OSError:\n        break\n"
        "    if pid == 0:\n        block = bytearray(200 << 20)\n"
        "        block[::4096] = b'x' * len(block[::4096])\n"
        "        os.write(w, b'1')\n        time.sleep(5)\n        os._exit(0)\n"
        "    pids.append(pid)\nreported = 0\ndeadline = time.time() + 3\n"
        "os.set_blocking(r, False)\nwhile time.time() < deadline and reported < len(pids):\n"
        "    try:\n        reported += len(os.read(r, 64))\n    except BlockingIOError:\n        time.sleep(0.05)\n"
        "alive = sum(os.waitpid(pid, os.WNOHANG) == (0, 0) for pid in pids)\n"
        "held = min(reported, alive) * 200\n"
        "if held > @@MEMORY_MIB@@:\n    print('ESCAPED: held', held, 'MiB')\n"
        "print('held', held, 'MiB')\n",
    ),
    Escape(
        "fill the disk",
        "written = 0\ntry:\n    for i in range(40):\n        with open(f'/tmp/fill{i}', 'wb') as fh:\n"
        "            for _ in range(10):\n                fh.write(b'x' * (1 << 20))\n"
        "                written += 1 << 20\nexcept OSError:\n    pass\n"
        "if written > @@DISK_MIB@@ << 20:\n    print('ESCAPED: wrote', written >> 20, 'MiB')\n",
    ),
    Escape(
        "fill /dev/shm",
        "import os\nwritten = 0\ntry:\n    with open('/dev/shm/fill', 'wb') as fh:\n"
        "        for _ in range(1500):\n            fh.write(b'x' * (1 << 20))\n            written += 1 << 20\n"
        "except OSError:\n    pass\nif written > (@@MEMORY_MIB@@ + @@DISK_MIB@@) << 20:\n"
        "    print('ESCAPED: wrote', written >> 20, 'MiB')\n",
    ),
    Escape(
        "run past the time limit",
        "import time\ntime.sleep(@@SLEEP_PAST@@)\nprint('ESCAPED: still running')\n",
    ),
    Escape(
        "spin past the CPU limit",
        "import time\nend = time.time() + @@SLEEP_PAST@@\nwhile time.time() < end:\n    pass\n"
        "print('ESCAPED: still spinning')\n",
    ),
]
