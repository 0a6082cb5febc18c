"""How the client reaches a server over a network: TLS (system trust store, --ca-cert, --insecure),
credentials (Basic auth from the URL's userinfo, headers from --header, --header-file, --header-env)
and the server's public name.

A server is shown and recorded only as `scheme://host:port` (plus a path prefix, if the URL has one):
that name never holds a secret, and it is the same on every run, so a resumed batch sees the same
server. Every text the client builds from a server's answer goes through `redact`, because a proxy
may echo credentials back in an error page.
"""
from __future__ import annotations

import argparse
import logging
import os
import shlex
import ssl
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

log = logging.getLogger(__name__)
DEFAULT_MAX_DOWNLOAD_MB = 4096.0  # generous: minutes of 1024x576 video are well under this


class TransportError(ValueError):
    """A server URL or one of its TLS/credential options cannot be used (raised before anything is sent)."""


@dataclass
class TransportOptions:
    """The TLS and credential options of the command line, or of one line of a --servers file."""
    ca_cert: str | None = None
    insecure: bool = False
    headers: list[str] = field(default_factory=list)       # "Name: value"
    header_files: list[str] = field(default_factory=list)  # files of "Name: value" lines
    header_envs: list[str] = field(default_factory=list)   # environment variables holding such lines


@dataclass
class ServerAddress:
    """Where a server is and how to talk to it. `name` is public; `auth` and `headers` are secret."""
    url: str                                  # scheme://host:port[/prefix], no userinfo
    name: str                                 # the same, shown in tables, logs and the manifest
    auth: tuple[str, str] | None = None       # Basic auth (user, password) from the URL
    headers: dict[str, str] = field(default_factory=dict)
    ssl: ssl.SSLContext | bool = True         # True: aiohttp's default (the system trust store)
    ca_cert: str | None = None
    insecure: bool = False
    secrets: tuple[str, ...] = ()

    def redact(self, text: str) -> str:
        """`text` with every credential of this server replaced by ***."""
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text


def add_transport_args(p: argparse.ArgumentParser) -> None:
    t = p.add_argument_group("servers over a network (TLS, credentials); a --servers line may repeat these "
                             "options after its URL")
    t.add_argument("--ca-cert", metavar="FILE",
                   help="PEM file of the CA (or the self-signed certificate) to trust for https:// servers, "
                        "instead of the system trust store")
    t.add_argument("--insecure", action="store_true",
                   help="do NOT check https:// certificates (anyone on the path can read credentials and outputs); "
                        "prefer --ca-cert")
    t.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'",
                   help="HTTP header sent to every server, e.g. 'Authorization: Bearer TOKEN' (repeatable; "
                        "visible in the process list: prefer --header-file or --header-env)")
    t.add_argument("--header-file", action="append", default=[], metavar="FILE",
                   help="file of 'NAME: VALUE' lines, sent as headers to every server (repeatable)")
    t.add_argument("--header-env", action="append", default=[], metavar="VAR",
                   help="environment variable holding 'NAME: VALUE' lines, sent as headers (repeatable)")
    t.add_argument("--max-download-mb", type=float, default=DEFAULT_MAX_DOWNLOAD_MB, metavar="MB",
                   help=f"largest output file accepted from a server, in MiB (default {DEFAULT_MAX_DOWNLOAD_MB:g})")


def options_from_args(args: argparse.Namespace) -> TransportOptions:
    return TransportOptions(getattr(args, "ca_cert", None), bool(getattr(args, "insecure", False)),
                            list(getattr(args, "header", []) or []), list(getattr(args, "header_file", []) or []),
                            list(getattr(args, "header_env", []) or []))


class _LineParser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would print usage and exit; a servers file line is not argv
        raise TransportError(message)


def _line_parser() -> argparse.ArgumentParser:
    p = _LineParser(prog="servers file line", add_help=False)
    p.add_argument("url")
    for flag in ("--header", "--header-file", "--header-env"):
        p.add_argument(flag, action="append", default=[])
    p.add_argument("--ca-cert")
    p.add_argument("--insecure", action="store_true")
    return p


def read_servers_file(path: str, base: TransportOptions) -> list[ServerAddress]:
    """One server per line: `URL [--ca-cert FILE] [--insecure] [--header 'N: V'] [--header-file F] [--header-env V]`;
    a line's options add to (headers) or replace (--ca-cert, --insecure) the command line's."""
    out = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip() or line.strip().startswith("#"):
                continue
            try:
                ns, extra = _line_parser().parse_known_args(shlex.split(line))
            except (TransportError, ValueError) as e:
                raise TransportError(f"--servers {path} line {number}: {e}; expected 'URL [--ca-cert FILE] "
                                     "[--insecure] [--header \"NAME: VALUE\"] [--header-file FILE] "
                                     "[--header-env VAR]'") from None
            if extra:
                raise TransportError(f"--servers {path} line {number}: unknown option(s) "
                                     f"{' '.join(x for x in extra if x.startswith('-')) or 'after the URL'}; "
                                     "allowed: --ca-cert, --insecure, --header, --header-file, --header-env")
            opts = TransportOptions(ns.ca_cert or (None if ns.insecure else base.ca_cert),
                                    ns.insecure or (base.insecure and not ns.ca_cert),
                                    base.headers + ns.header, base.header_files + ns.header_file,
                                    base.header_envs + ns.header_env)
            out.append(server_address(ns.url, opts, where=f"--servers {path} line {number}"))
    return out


def server_address(spec: str, options: TransportOptions, where: str = "--server") -> ServerAddress:
    """The address of one server from its URL (userinfo = Basic auth) and the options that apply to it."""
    url = spec.strip() if "://" in spec else "http://" + spec.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TransportError(f"{where}: {_public(url)} is not an http:// or https:// server URL")
    if parts.query or parts.fragment:
        raise TransportError(f"{where}: {_public(url)}: a server URL has no ?query or #fragment")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise TransportError(f"{where}: {_public(url)} has an invalid port") from None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    base = f"{parts.scheme}://{host}:{port}{parts.path.rstrip('/')}"
    secrets: list[str] = []
    auth = None
    if parts.username is not None:
        auth = (unquote(parts.username), unquote(parts.password or ""))
        secrets += [parts.netloc.rsplit("@", 1)[0], *auth]
    headers = _headers(options, where)
    if auth and any(h.lower() == "authorization" for h in headers):
        raise TransportError(f"{where}: {base} has user:password in its URL and an Authorization header; "
                             "give one of them (a servers file line can carry its own --header)")
    for value in headers.values():
        secrets += [value, *value.split()[1:]]  # "Bearer TOKEN": the token alone, too
    ctx = tls_context(options, where) if parts.scheme == "https" else True
    if parts.scheme == "http" and (auth or headers) and parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        log.warning("%s: credentials go to %s over plain http (readable on the network); use https://", where, base)
    if parts.scheme == "https" and options.insecure:
        log.warning("TLS CERTIFICATE CHECKS ARE OFF for %s (--insecure): anyone on the path can impersonate "
                    "the server and read credentials and outputs; pass --ca-cert FILE instead", base)
    # longest first, so a secret that contains another is replaced whole; very short ones would garble text
    secrets = sorted({s for s in secrets if len(s) >= 3}, key=len, reverse=True)
    return ServerAddress(base, base, auth, headers, ctx, options.ca_cert, options.insecure, tuple(secrets))


def tls_context(options: TransportOptions, where: str) -> ssl.SSLContext | bool:
    if options.insecure and options.ca_cert:
        raise TransportError(f"{where}: --ca-cert and --insecure contradict each other; give one")
    if options.insecure:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    if options.ca_cert:
        try:
            return ssl.create_default_context(cafile=options.ca_cert)
        except (OSError, ssl.SSLError) as e:
            raise TransportError(f"{where}: --ca-cert {options.ca_cert}: cannot be read as PEM certificates "
                                 f"({type(e).__name__}: {e}); pass the CA certificate file in PEM format") from None
    return True


def _headers(options: TransportOptions, where: str) -> dict[str, str]:
    lines = [(h, "--header") for h in options.headers]
    for path in options.header_files:
        try:
            with open(path, encoding="utf-8") as f:
                lines += [(ln, f"--header-file {path}") for ln in f.read().splitlines()]
        except OSError as e:
            raise TransportError(f"{where}: --header-file {path}: {e.strerror}") from None
    for var in options.header_envs:
        if var not in os.environ:
            raise TransportError(f"{where}: --header-env {var}: no such environment variable is set")
        lines += [(ln, f"--header-env {var}") for ln in os.environ[var].splitlines()]
    headers: dict[str, str] = {}
    for line, source in lines:
        if not line.strip() or line.strip().startswith("#"):
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip() or any(c in name for c in " \t\r\n") or not value.strip():
            # never echo the line: it may hold a token
            raise TransportError(f"{where}: {source}: a header must read 'NAME: VALUE' (e.g. 'Authorization: "
                                 "Bearer TOKEN')")
        headers[name.strip()] = value.strip()
    return headers


def _public(url: str) -> str:
    """A URL as text for an error message: without its userinfo."""
    scheme, sep, rest = url.partition("://")
    netloc, slash, path = rest.partition("/")
    return f"{scheme}{sep}{netloc.rsplit('@', 1)[-1]}{slash}{path}"


def inside(root: str, path: str) -> bool:
    """Whether `path` resolves (symlinks followed) to a place inside the folder `root`."""
    root_real = os.path.realpath(root)
    return os.path.commonpath([root_real, os.path.realpath(path)]) == root_real
