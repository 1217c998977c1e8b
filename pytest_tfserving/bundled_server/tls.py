"""``--ssl_config_file``: TF Serving's SSLConfig text (server_key, server_cert, custom_ca,
client_verify) as gRPC server credentials.

The SSLConfig proto does not ship in tensorflow-serving-api, so its four scalar fields are read
here from the text format (string fields may be split into several adjacent quoted pieces, as
PEM files usually are).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_tfserving.errors import ConfigError

if TYPE_CHECKING:
    import grpc

_FIELD = re.compile(r'(\w+)\s*:?\s*((?:"(?:[^"\\]|\\.)*"\s*)+|\w+)')
_KNOWN = ("server_key", "server_cert", "custom_ca", "client_verify")


def parse_ssl_config(text: str, where: str) -> dict[str, str | bool]:
    stripped = re.sub(r"(?m)#.*$", "", text)
    out: dict[str, str | bool] = {}
    for m in _FIELD.finditer(stripped):
        name, raw = m.group(1), m.group(2).strip()
        if name not in _KNOWN:
            raise ConfigError(f"Error parsing text-format tensorflow.serving.SSLConfig: unknown "
                              f"field {name!r} in {where}; fields are {', '.join(_KNOWN)}")
        if name == "client_verify":
            if raw not in ("true", "false"):
                raise ConfigError(f"{where}: client_verify must be true or false, got {raw!r}")
            out[name] = raw == "true"
        else:
            pieces = re.findall(r'"((?:[^"\\]|\\.)*)"', raw)
            out[name] = "".join(ast.literal_eval(f'"{p}"') for p in pieces)
    return out


def read_ssl_credentials(path: str) -> grpc.ServerCredentials:
    import grpc

    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"Cannot read --ssl_config_file {path!r}: {exc.strerror}") from None
    cfg = parse_ssl_config(text, path)
    key, cert = cfg.get("server_key"), cfg.get("server_cert")
    if not isinstance(key, str) or not isinstance(cert, str) or not key or not cert:
        raise ConfigError(f"--ssl_config_file {path}: server_key and server_cert are both needed "
                          "(PEM text)")
    ca = cfg.get("custom_ca")
    return grpc.ssl_server_credentials(
        [(key.encode(), cert.encode())],
        root_certificates=ca.encode() if isinstance(ca, str) and ca else None,
        require_client_auth=bool(cfg.get("client_verify", False)),
    )
