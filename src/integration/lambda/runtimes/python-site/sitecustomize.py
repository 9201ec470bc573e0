"""Loaded at start by switchboard's Python function processes (it is on their PYTHONPATH):
sends connections to the AWS hostnames of the services switchboard serves
(`*.execute-api.*.amazonaws.com`, `dynamodb.*.amazonaws.com`) to switchboard's listener. The
name is kept for TLS (SNI and certificate checks), so handlers that build those URLs reach
switchboard without a change. Only this process is affected; the machine's DNS is not."""

import os
import re
import socket
import urllib.parse

_target = os.environ.get("SWITCHBOARD_REDIRECT")
_SERVED = re.compile(
    r"^([a-z0-9-]+\.execute-api|dynamodb)\.[a-z0-9-]+\.amazonaws\.com$", re.IGNORECASE
)

if _target:
    _parts = urllib.parse.urlsplit(_target)
    _host, _port = _parts.hostname, _parts.port
    _getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if isinstance(host, bytes):
            name = host.decode("ascii", "replace")
        else:
            name = host
        if isinstance(name, str) and _SERVED.match(name):
            return _getaddrinfo(_host, _port, *args, **kwargs)
        return _getaddrinfo(host, port, *args, **kwargs)

    socket.getaddrinfo = getaddrinfo
