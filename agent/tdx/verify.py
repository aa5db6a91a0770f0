"""Offline verification of a TDX quote's signatures and certificate chain.

:func:`verify_signatures` checks, with ``cryptography``: the quote signature with the
attestation key, the QE report signature with the PCK leaf key, the QE binding of the
attestation key, the chain PCK -> PCK CA -> root, and the root against the pinned Intel SGX
Root CA (:data:`.certs.INTEL_SGX_ROOT_CA_PEM`). It fetches nothing: no network, no Intel PCS
collateral, so no TCB status (TCB Info, QE Identity), no CRLs and no certificate validity
dates are evaluated. A quote that passes all of this is genuine Intel-signed evidence, not
proof that the platform is up to date: that is the verifier's (Trustee's) job.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding

from .certs import INTEL_SGX_ROOT_CA_PEM
from .parse import as_quote
from .structures import Quote

__all__ = ["Check", "Verification", "verify_signatures"]


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def to_dict(self) -> dict:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


@dataclass(frozen=True)
class Verification:
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failed(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.ok)

    def to_dict(self) -> dict:
        return {"ok": self.ok, "checks": [c.to_dict() for c in self.checks]}


_CRYPTO_ERRORS = (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm)


def _p256_key(xy: bytes) -> ec.EllipticCurvePublicKey:
    return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + xy)


def _ecdsa_verify(key, rs: bytes, message: bytes) -> None:
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise TypeError("the key is not an ECDSA P-256 key")
    sig = encode_dss_signature(int.from_bytes(rs[:32], "big"), int.from_bytes(rs[32:], "big"))
    key.verify(sig, message, ec.ECDSA(hashes.SHA256()))


def _check(name: str, ok_detail: str, fn) -> Check:
    try:
        fn()
    except InvalidSignature:
        return Check(name, False, "signature does not verify")
    except _CRYPTO_ERRORS as e:
        return Check(name, False, str(e) or type(e).__name__)
    return Check(name, True, ok_detail)


def _short(c: x509.Certificate) -> str:
    cn = c.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(cn[0].value) if cn else c.subject.rfc4514_string()


def verify_signatures(quote: Quote | bytes) -> Verification:
    """Check a quote's signatures and chain offline; returns every check's result (never raises
    for a bad signature; :class:`QuoteError` only if ``quote`` is bytes that do not parse).

    Checks: ``quote_signature`` (ECDSA-P256/SHA-256 over header, v5 descriptor and body, with the
    attestation key), ``qe_report_signature`` (over the 384-byte QE report, with the PCK leaf
    certificate's key), ``qe_binding`` (QE report REPORTDATA = SHA-256(attestation key || QE auth
    data) || 32 zero bytes), ``cert_chain`` (exactly PCK leaf -> PCK CA -> root, each issued and
    signed by the next, CAs marked CA, root self-signed) and ``root_ca`` (the root is the pinned
    :data:`INTEL_SGX_ROOT_CA_PEM`). No network, no collateral: TCB status, QE Identity, CRLs
    and validity dates are not evaluated.
    """
    q = as_quote(quote)
    sd = q.signature_data
    certs = [c.x509() for c in sd.certificates]
    checks = [
        _check("quote_signature", f"ECDSA-P256/SHA-256 over bytes 0..{len(q.signed_region)} with the "
               "attestation key",
               lambda: _ecdsa_verify(_p256_key(sd.attestation_key), sd.signature, q.signed_region)),
        _check("qe_report_signature", f"QE report signed by the PCK leaf key ({_short(certs[0])})",
               lambda: _ecdsa_verify(certs[0].public_key(), sd.qe_report_signature, sd.qe_report.raw)),
    ]
    want = hashlib.sha256(sd.attestation_key + sd.qe_auth_data).digest() + bytes(32)
    got = sd.qe_report.report_data
    if hmac.compare_digest(got, want):
        checks.append(Check("qe_binding", True, "QE report REPORTDATA = SHA-256(attestation key || QE "
                                                "auth data) || 32 zero bytes"))
    else:
        which = "first 32 bytes differ from" if got[:32] != want[:32] else "last 32 bytes are not zero in"
        checks.append(Check("qe_binding", False, f"QE report REPORTDATA {which} SHA-256(attestation key "
                                                 "|| QE auth data) || 32 zero bytes"))
    checks.append(_check_chain(certs))
    checks.append(_check_root(certs))
    return Verification(tuple(checks))


def _is_ca(c: x509.Certificate) -> bool:
    try:
        return bool(c.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def _check_chain(certs: list[x509.Certificate]) -> Check:
    if len(certs) != 3:
        return Check("cert_chain", False,
                     f"expected 3 certificates (PCK leaf, PCK CA, root), got {len(certs)}")
    leaf, ca, root = certs

    def run():
        for child, parent in ((leaf, ca), (ca, root), (root, root)):
            try:
                child.verify_directly_issued_by(parent)
            except _CRYPTO_ERRORS as e:
                what = "is not self-signed" if child is parent else f"is not issued by {_short(parent)}"
                raise ValueError(f"{_short(child)} {what} ({e or type(e).__name__})")
        for c in (ca, root):
            if not _is_ca(c):
                raise ValueError(f"{_short(c)} is not marked as a CA")

    return _check("cert_chain", " <- ".join(_short(c) for c in certs) + " (each signed by the next)", run)


def _check_root(certs: list[x509.Certificate]) -> Check:
    root = certs[-1]
    der = root.public_bytes(Encoding.DER)
    fp = hashlib.sha256(der).hexdigest()
    pinned = x509.load_pem_x509_certificate(INTEL_SGX_ROOT_CA_PEM.encode("ascii")).public_bytes(Encoding.DER)
    if der == pinned:
        return Check("root_ca", True, f"the pinned Intel SGX Root CA (SHA-256 {fp})")
    return Check("root_ca", False, f"the chain's root ({_short(root)}, SHA-256 {fp}) is not the pinned "
                                   "Intel SGX Root CA")
