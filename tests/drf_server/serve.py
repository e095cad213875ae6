"""Run the drf-chunked-upload test server under a production WSGI server.

``python -m tests.drf_server.serve --port 0 --dir DIR [--token KEY]
[--extra-user NAME:KEY ...]`` migrates a fresh SQLite database in DIR, creates
the users and their tokens, serves on 127.0.0.1 with cheroot (threaded, and it
streams request bodies to Django instead of buffering them), prints exactly one
line ``READY http://127.0.0.1:PORT TOKEN`` to stdout once the socket listens,
and shuts down cleanly on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

HOST = "127.0.0.1"
MAIN_USER = "uploader"


def _user_token(value: str) -> tuple[str, str]:
    name, sep, key = value.partition(":")
    if not (sep and name and key):
        raise argparse.ArgumentTypeError("expected NAME:TOKEN")
    return name, key


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, required=True, help="state directory (db, media)")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--token", default=None, help="token of the main user (default: random)")
    parser.add_argument(
        "--extra-user",
        type=_user_token,
        action="append",
        default=[],
        metavar="NAME:TOKEN",
        help="create another user with this token (repeatable)",
    )
    parser.add_argument("--threads", type=int, default=10)
    return parser.parse_args(argv)


def _setup_django(directory: Path) -> None:
    # Settings read DRF_SERVER_DIR at import, so set it before django.setup().
    os.environ["DRF_SERVER_DIR"] = str(directory)
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.drf_server.settings"
    import django

    django.setup()


def _create_users(users: list[tuple[str, str]]) -> None:
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from rest_framework.authtoken.models import Token

    call_command("migrate", verbosity=0, interactive=False)
    user_model = get_user_model()
    for name, key in users:
        user, _ = user_model.objects.get_or_create(username=name)
        Token.objects.filter(user=user).delete()
        Token.objects.create(user=user, key=key)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    directory: Path = args.dir.resolve()
    for sub in ("media", "tmp"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    # authtoken keys are at most 40 characters; 20 random bytes in hex fit.
    token: str = args.token or secrets.token_hex(20)

    _setup_django(directory)
    _create_users([(MAIN_USER, token), *args.extra_user])

    from cheroot.wsgi import Server
    from django.core.wsgi import get_wsgi_application

    server = Server((HOST, args.port), get_wsgi_application(), numthreads=args.threads)
    server.prepare()  # binds and listens; bind_addr now holds the real port
    port = server.bind_addr[1]

    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

    # serve() runs in a worker thread so the main thread stays free to receive
    # signals and call stop() outside any signal handler.
    serving = threading.Thread(target=server.serve, name="cheroot-serve", daemon=True)
    serving.start()
    print(f"READY http://{HOST}:{port} {token}", flush=True)

    while not stop.wait(0.5) and serving.is_alive():
        pass
    server.stop()
    serving.join(timeout=10)
    # Exiting without a signal means serve() died: report it as a failure.
    return 0 if stop.is_set() else 1


if __name__ == "__main__":
    sys.exit(main())
