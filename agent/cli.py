"""``python -m agent``: the init agent's command line (``quote``, ``get-resource``, ``broker``, ``run``,
``check``, ``reference``, ``demo``)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile

from cryptfs.core.argv import UsageParser, prog_name, run_main
from cryptfs.core.version import VERSION

from . import demo, exitcodes, protocol, reference
from . import tdx as tdxq
from .attesters import CHOICES as ATTESTER_CHOICES
from .errors import AgentError, QuoteError, QuoteVerificationError, UsageError, untrusted
from .run.backends import BACKENDS, DEFAULT_METHOD
from .run.launch import MEASURE_MODES

MAX_INPUT = 64 << 20  # a quote is ~5 KB; DICE/post-quantum chains can reach MBs, never this


class _Parser(UsageParser):
    usage_error = UsageError


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=prog_name("agent"),
                     description="The confidential model-serving init agent.")
    parser.add_argument("--version", action="version", version=f"agent {VERSION}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("quote", help="decode (and optionally check) an Intel TDX quote",
                       description="Decode an Intel TDX quote (v4 or v5). Checks are offline: no "
                                   "collateral, no TCB status.")
    p.add_argument("file", metavar="FILE",
                   help="the quote: raw binary, base64 or hex text ('-' reads stdin)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--verify", action="store_true",
                   help="check the quote and QE report signatures, the QE binding and the PCK chain up "
                        "to the pinned Intel SGX Root CA")
    p.add_argument("--report-data", metavar="HEX",
                   help="refuse the quote unless it is TDX, not a debug TD, and its REPORTDATA is "
                        "exactly these 64 bytes (128 hex digits)")
    p.add_argument("--allow-debug", action="store_true",
                   help="with --report-data: accept a debug TD (development only)")
    p = sub.add_parser("get-resource", help="attest to a Trustee key broker and fetch a resource",
                       description="Like CDH's get-resource: prove the environment to the broker, receive "
                                   "the resource as a JWE, decrypt it with an in-memory key pair.")
    p.add_argument("uri", metavar="kbs:///REPO/TYPE/TAG")
    p.add_argument("--url", help="broker base URL, may carry a path prefix (default: env TRUSTEE_URL)")
    p.add_argument("--out", metavar="FILE", help="write the bytes here (mode 0600) instead of stdout")
    _attest_args(p)

    p = sub.add_parser("run", help="attest, fetch the key, mount the model, then start COMMAND",
                       description="Configured by flags or the environment variables named in each "
                                   "flag's help (the flag wins); with none of them set it just starts "
                                   "COMMAND.")
    _run_args(p)
    p.add_argument("run_command", nargs=argparse.REMAINDER, metavar="-- COMMAND [ARGS...]")

    p = sub.add_parser("check", help="validate the run configuration and environment (no key fetched)",
                       description="Takes run's flags and variables; checks what run would need, in the "
                                   "mode it would run, without fetching the key.")
    _run_args(p)

    reference.add_parser(sub)
    demo.add_parser(sub)

    p = sub.add_parser("broker", help="run a local Trustee-compatible dev broker on loopback",
                       description="A key broker for laptops and tests: never for production.")
    p.add_argument("--resource", action="append", default=[], metavar="REPO/TYPE/TAG=@FILE",
                   help="serve FILE's bytes as this resource (repeatable)")
    p.add_argument("--dialect", choices=protocol.BROKER_DIALECTS, default=protocol.BROKER_DIALECTS[0],
                   help="KBS protocol to speak (0.1.0: Alibaba chart 1.0.0; 0.4.0: current)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--policy", metavar="FILE", help="JSON policy (see docs/agent.md)")
    p.add_argument("--reference", action="append", default=[], metavar="FILE",
                   help="reference values: an RVPS 'sample' message file, as registered with Trustee's RVPS "
                        "(repeatable; values are added to the policy's)")
    p.add_argument("--require-model-event", action="store_true",
                   help="deny keys unless the replayed event log holds at least one pai/load-model event")
    return parser


def _run_args(p: argparse.ArgumentParser) -> None:
    """run's and check's flags: each has an environment variable (agent.run.config.ENV), so no
    flag has a default here; the variable, then the documented default, fill in what is not given."""
    p.add_argument("--url", help="broker base URL, http(s)://HOST[:PORT][/PREFIX] (env TRUSTEE_URL)")
    p.add_argument("--key-uri", help="kbs:///repo/type/tag of the model key (env DECRYPTION_KEY_URI)")
    p.add_argument("--method",
                   help=f"{' | '.join(BACKENDS)} (env ENCRYPTION_METHOD; default {DEFAULT_METHOD})")
    p.add_argument("--expect-digest", metavar="DIGEST",
                   help="refuse any model but this one: the gocryptfs tree digest or the Sam package digest, "
                        "sha256:... (env EXPECTED_MODEL_DIGEST)")
    p.add_argument("--model-id", metavar="ID",
                   help="the model-id measured in the pai/load-model event (env MODEL_ID; default the tag of "
                        "the key URI)")
    p.add_argument("--measure", choices=MEASURE_MODES,
                   help="measure the model and command before the key is fetched: auto (where a register "
                        "exists, else warn), required (else exit 113 before any request), off (env MEASURE; "
                        "default auto)")
    p.add_argument("--warmup", metavar="on|off|BUDGET",
                   help="decrypt the model ahead through the mount while the server starts, foreground "
                        "reads first, within a memory budget (env MODEL_WARMUP; default off; a budget "
                        "such as 8G or 50%% turns it on with that limit)")
    p.add_argument("--cipher-dir", help="the encrypted model directory (env ENCRYPTED_MODEL_PATH)")
    p.add_argument("--mount-path",
                   help="where the plaintext appears (env MODEL_MOUNT_PATH; default /mnt/model)")
    p.add_argument("--mount-mode", dest="mode", choices=("fuse", "copy"),
                   help="fuse: serve through the decrypting mount; copy: decrypt into tmpfs, no FUSE "
                        "needed (env MOUNT_MODE; default fuse)")
    p.add_argument("--gocryptfs-flags", metavar="FLAGS",
                   help="gocryptfs feature flags to accept beyond v2's defaults, comma-separated: "
                        "XChaCha20Poly1305, AESSIV, DeterministicNames, LongNameMax, PlaintextNames "
                        "(env GOCRYPTFS_FLAGS)")
    p.add_argument("--log-format", choices=("text", "json"), help="env LOG_FORMAT; default text")
    p.add_argument("--attester", choices=ATTESTER_CHOICES,
                   help="evidence source (env ATTESTER; default auto: tdx where configfs-tsm offers it; "
                        "sample only when asked for)")
    first, *rest = protocol.DIALECTS
    p.add_argument("--dialect", choices=protocol.DIALECTS,
                   help=f"KBS protocol version (env KBS_DIALECT; default: probe {first}, then "
                        f"{', '.join(rest)})")
    p.add_argument("--key-alg", choices=protocol.KEY_ALGORITHMS,
                   help=f"TEE key type for protocol >= 0.2.0 (env KEY_ALG; default "
                        f"{protocol.DEFAULT_KEY_ALG} P-256)")
    p.add_argument("--ca-bundle", metavar="PEM", help="CA certificates for an https broker (env "
                                                      "TRUSTEE_CA_BUNDLE)")
    p.add_argument("--require-tls", action="store_true", default=None,
                   help="refuse an http:// broker URL (env TRUSTEE_REQUIRE_TLS=1)")
    p.add_argument("--timeout", type=float,
                   help="seconds for everything sent to the broker (env TRUSTEE_TIMEOUT; default 60)")
    p.add_argument("--allow-debug", action="store_true", default=None,
                   help="accept a debug TD (development only; env ALLOW_DEBUG=1)")


def _attest_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--attester", choices=ATTESTER_CHOICES,
                   help="evidence source (default: env ATTESTER, else auto: tdx where configfs-tsm "
                        "offers it; sample only when asked for)")
    first, *rest = protocol.DIALECTS
    p.add_argument("--dialect", choices=protocol.DIALECTS,
                   help=f"KBS protocol version (default: probe {first}, then {', '.join(rest)})")
    p.add_argument("--key-alg", choices=protocol.KEY_ALGORITHMS,
                   help=f"TEE key type for protocol >= 0.2.0 (default {protocol.DEFAULT_KEY_ALG} P-256)")
    p.add_argument("--ca-bundle", metavar="PEM", help="CA certificates for an https broker")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request (default 60)")
    p.add_argument("--allow-debug", action="store_true", help="accept a debug TD (development only)")


def _read(path: str) -> bytes:
    if path == "-":
        data = sys.stdin.buffer.read(MAX_INPUT + 1)
    else:
        with open(path, "rb") as f:
            data = f.read(MAX_INPUT + 1)
    if len(data) > MAX_INPUT:
        raise QuoteError(f"{path}: larger than {MAX_INPUT >> 20} MiB, not a quote")
    return data


def _report_data_arg(text: str) -> bytes:
    digits = "".join(text.split()).removeprefix("0x")
    try:
        value = bytes.fromhex(digits)
    except ValueError:
        raise UsageError("--report-data takes hex digits") from None
    if len(value) != tdxq.REPORT_DATA_SIZE:
        raise UsageError(f"--report-data must be exactly {tdxq.REPORT_DATA_SIZE} bytes "
                         f"({2 * tdxq.REPORT_DATA_SIZE} hex digits), got {len(value)}; a shorter hash "
                         "is zero-padded by the attester, so pad it the same way")
    return value


# -- the table ---------------------------------------------------------------------------------------
_BODY_NAMES = {tdxq.BODY_TYPE_TDX10: "TDX 1.0 TD report", tdxq.BODY_TYPE_TDX15: "TDX 1.5 TD report"}


def _tee_name(tee_type: int) -> str:
    return {tdxq.TEE_TYPE_TDX: "TDX", tdxq.TEE_TYPE_SGX: "SGX: NOT TDX"}.get(tee_type, "unknown: NOT TDX")


def format_table(q: tdxq.Quote, source: str, encoding: str) -> str:
    h, b, sd = q.header, q.body, q.signature_data
    rows: list[tuple[str, str]] = []

    def row(key: str, value: str) -> None:
        rows.append((key, value))

    body = f"{q.body_size} bytes, {_BODY_NAMES[q.body_type]}"
    row("file", f"{source} ({len(q.raw)} bytes, {encoding})")
    row("version", f"{h.version} ({body})" if h.version == 4
        else f"{h.version} (body type {q.body_type}: {body})")
    row("attestation key", f"{h.att_key_type} (ECDSA-256 with P-256)")
    row("TEE type", f"0x{h.tee_type:08x} ({_tee_name(h.tee_type)})")
    vendor = " (Intel)" if h.qe_vendor_id == tdxq.INTEL_QE_VENDOR_ID else " (not Intel)"
    row("QE vendor ID", h.qe_vendor_id.hex() + vendor)
    row("QE SVN", f"{q.qe_svn} (QE report ISVSVN)")
    row("PCE SVN", "(not in the PCK certificate)" if q.pce_svn is None else f"{q.pce_svn} (PCK certificate)")
    if sd.pck is not None:
        row("FMSPC", sd.pck.fmspc.hex())
    row("header reserved", h.reserved.hex())
    row("user data", h.user_data.hex())
    row("TEE_TCB_SVN", b.tee_tcb_svn.hex())
    if b.tee_tcb_svn2 is not None:
        row("TEE_TCB_SVN2", b.tee_tcb_svn2.hex())
    row("MRSEAM", b.mr_seam.hex())
    row("MRSIGNERSEAM", b.mr_signer_seam.hex())
    row("SEAMATTRIBUTES", f"0x{b.seam_attributes:016x}")
    attrs = b.td_attributes
    names = " ".join(attrs.set_bits) or "(none)"
    warn = "  DEBUG TD: the host can read and change it" if attrs.debug else ""
    row("TDATTRIBUTES", f"0x{attrs.value:016x} {names}{warn}")
    row("XFAM", f"0x{b.xfam:016x}")
    row("MRTD", b.mr_td.hex())
    row("MRCONFIGID", b.mr_config_id.hex())
    row("MROWNER", b.mr_owner.hex())
    row("MROWNERCONFIG", b.mr_owner_config.hex())
    if b.mr_servicetd is not None:
        row("MRSERVICETD", b.mr_servicetd.hex())
    for i, rtmr in enumerate(b.rtmrs):
        row(f"RTMR{i}", rtmr.hex())
    row("REPORTDATA", b.report_data.hex())
    row("signature data", f"{q.signature_data_len} bytes, QE auth data {len(sd.qe_auth_data)} bytes, "
                          f"trailing bytes {q.trailing_bytes}")
    row("QE report", f"MRSIGNER {sd.qe_report.mr_signer.hex()} ISVPRODID {sd.qe_report.isv_prod_id} "
                     f"ISVSVN {sd.qe_report.isv_svn}")
    for i, c in enumerate(sd.certificates):
        row(f"certificate {i}", f"{c.subject}")
        row("", f"issuer {c.issuer}")
        row("", f"valid {c.not_before:%Y-%m-%d %H:%M:%S} .. {c.not_after:%Y-%m-%d %H:%M:%S} UTC, "
                f"SHA-256 {c.sha256}")
    width = max(len(k) for k, _ in rows) + 2
    return "\n".join(f"{(k + ':') if k else '':<{width}}{v}".rstrip() for k, v in rows)


def _format_verification(v: tdxq.Verification) -> str:
    lines = ["signature checks (offline: no collateral, TCB status, CRLs or validity dates):"]
    width = max(len(c.name) for c in v.checks)
    for c in v.checks:
        lines.append(f"  {c.name:<{width}}  {'OK' if c.ok else 'FAILED'}  {c.detail}")
    return "\n".join(lines)


# -- commands ----------------------------------------------------------------------------------------
def cmd_quote(args) -> int:
    if args.allow_debug and args.report_data is None:
        raise UsageError("--allow-debug only applies with --report-data")
    expected = None if args.report_data is None else _report_data_arg(args.report_data)
    try:
        raw, encoding = tdxq.decode_quote_input(_read(args.file))
        quote = tdxq.parse_quote(raw)
    except QuoteError as e:
        raise QuoteError(f"{args.file}: {e}", e.offset) from None
    verification = tdxq.verify_signatures(quote) if args.verify else None
    problems = None if expected is None else tdxq.quote_problems(quote, expected, args.allow_debug)

    if args.json:
        out: dict = {"file": args.file, "input_format": encoding, "quote": quote.to_dict()}
        if verification is not None:
            out["verification"] = verification.to_dict()
        if problems is not None:
            out["report_data_check"] = {"expected": expected.hex(), "allow_debug": args.allow_debug,
                                        "ok": not problems, "problems": problems}
        print(json.dumps(out, indent=2))
    else:
        print(format_table(quote, args.file, encoding))
        if verification is not None:
            print(_format_verification(verification))
        if problems is not None:
            print(f"report data check: {'OK' if not problems else 'REFUSED'}")
    sys.stdout.flush()

    if verification is not None and not verification.ok:
        names = ", ".join(c.name for c in verification.failed)
        raise QuoteVerificationError(f"{len(verification.failed)} of {len(verification.checks)} signature "
                                     f"checks failed: {names}")
    if problems:
        raise QuoteError("quote refused: " + "; ".join(problems))
    return exitcodes.OK


class _JsonFormatter(logging.Formatter):
    """One JSON object per record: json.dumps escapes newlines and control characters, so text
    from a broker stays inside its ``message`` string."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": record.created, "level": record.levelname.lower(), "logger": record.name,
               "message": record.getMessage()}
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out)


class _TextFormatter(logging.Formatter):
    """One record, one line: control characters escaped (:func:`agent.errors.untrusted`), so a
    broker's error detail (newlines, ANSI escapes) can neither forge a log line nor drive the
    terminal, whichever logger call quoted it."""

    def __init__(self):
        super().__init__("%(asctime)s agent %(levelname)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return untrusted(super().format(record), None)


def _setup_logging(fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)


def cmd_run(args) -> int:
    from .run import run
    from .run.config import log_format

    _setup_logging(log_format(args))
    command = args.run_command[1:] if args.run_command[:1] == ["--"] else args.run_command
    try:
        return run(args, command)
    except AgentError as e:
        logging.getLogger("agent.run").error("%s", e)
        return e.run_exit_code


def _attester(args):
    from .attesters import select

    return select(args.attester, os.environ, allow_debug=args.allow_debug)


def cmd_get_resource(args) -> int:
    from .kbs import KbsClient, instance_info_header

    _setup_logging()
    url = args.url or os.environ.get("TRUSTEE_URL")
    if not url:
        raise UsageError("no broker URL: give --url or set TRUSTEE_URL")
    client = KbsClient(url, _attester(args), dialect=args.dialect, key_alg=args.key_alg,
                       ca_bundle=args.ca_bundle, timeout=args.timeout, instance_info=instance_info_header())
    data = client.get_resource(args.uri)
    try:
        if args.out:
            _write_private(args.out, data)
        else:
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
    finally:
        data[:] = bytes(len(data))  # our copy of the resource (a key, usually) ends here
    return exitcodes.OK


def _write_private(path: str, data: bytes) -> None:
    """Mode 0600, written to a temp file and renamed: a failure never leaves ``path`` behind."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".get-resource-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def cmd_broker(args) -> int:
    from . import broker

    _setup_logging()
    if not args.resource:
        raise UsageError("give at least one --resource REPO/TYPE/TAG=@FILE")
    policy = broker.Policy.load(args.policy, args.reference, args.require_model_event)
    b = broker.Broker(broker.load_resources(args.resource), args.dialect, policy)
    try:
        server = broker.serve(b, args.host, args.port)
    except OSError as e:
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {e.strerror}") from None
    logging.getLogger("agent.broker").warning(
        "dev broker (protocol %s) on http://%s:%d serving %d resource(s): for development only, never "
        "for production", args.dialect, args.host, server.server_address[1], len(b.resources))
    logging.getLogger("agent.broker").info("policy: %s", policy.describe())
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return exitcodes.OK


def cmd_check(args) -> int:
    from .run import check

    _setup_logging()
    return check(args)


COMMANDS = {"quote": cmd_quote, "get-resource": cmd_get_resource, "broker": cmd_broker, "run": cmd_run,
            "check": cmd_check, "reference": reference.cmd_reference, "demo": demo.cmd_demo}


def main(argv: list[str] | None = None) -> int:
    return run_main("agent", build_parser(), COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
