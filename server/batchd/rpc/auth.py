"""Authentication at the edge: who is calling, from bearer tokens and client certificates.

Authentication is **off** when no ``tokens`` and no ``tls_client_ca_file`` are configured (the
zero-config demo stays open); everything below applies only when it is on.

Authentication (``AuthInterceptor``, for unary and streaming RPCs alike):

- ``authorization: Bearer <token>`` metadata. The token's SHA-256 is compared, in constant
  time (``hmac.compare_digest``), with every configured ``tokens[].sha256``; plaintext tokens
  are never configured or stored. A presented token is always checked: a bad one is refused
  even when the connection also carries a client certificate.
- Without a token, on an mTLS connection (batchd.rpc.tls), the client certificate's subject CN
  is the principal (the TLS layer has already verified the certificate against
  ``tls_client_ca_file``); its scopes are ``client_cert_scopes[CN]`` (none if the CN is not
  listed).
- Otherwise the RPC fails with UNAUTHENTICATED: missing, malformed or unknown token (a
  refused request stream is read until the client stops writing: ``let_the_client_finish``).
- ``grpc.health.v1.Health/*`` is always open; server reflection is open while
  ``reflection_public`` is true (it shows the published .proto, nothing of the database).

What a principal may do (scopes) is the domain's: batchd.principals.

The principal reaches the servicer through ``current_principal``, set by the interceptor
*inside* the wrapped method handler, i.e. in the RPC's own execution (grpc.aio documents that
interceptors and method handlers share a per-RPC context, but the client certificate is only
visible through the method handler's ``context.auth_context()`` anyway). The servicer hands it
on to the planner and the stream session as a plain value; code that runs outside an RPC sees
None, which means "authentication is off".
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any

import grpc
from grpc_status import rpc_status

from batchd.config import Settings
from batchd.errors import BatchdError, Unauthenticated, to_rpc_status
from batchd.principals import Principal, hash_token
from batchd.rpc import shapes

log = logging.getLogger(__name__)

AUTHORIZATION = "authorization"
HEALTH_PREFIX = "/grpc.health.v1.Health/"
REFLECTION_PREFIX = "/grpc.reflection."  # v1alpha and v1
current_principal: ContextVar[Principal | None] = ContextVar("batchd_principal", default=None)


class Authenticator:
    """Credentials → ``Principal``, or ``Unauthenticated`` saying what was wrong."""

    def __init__(self, settings: Settings) -> None:
        self._tokens = [(t.sha256, Principal(t.principal, tuple(t.scopes), "token", t.role))
                        for t in settings.tokens]
        self._mtls = settings.tls_client_ca_file is not None
        self._cert_scopes = {cn: tuple(s) for cn, s in settings.client_cert_scopes.items()}
        self._cert_roles = dict(settings.client_cert_roles)

    def authenticate(self, metadata: Sequence[tuple[str, Any]],
                     auth_context: Mapping[str, Sequence[bytes]]) -> Principal:
        values = [value for key, value in metadata if key == AUTHORIZATION]
        if values:
            return self._token(values)
        names = auth_context.get("x509_common_name") if self._mtls else None
        if names:
            cn = names[0].decode(errors="replace")
            return Principal(cn, self._cert_scopes.get(cn, ()), "certificate",
                             self._cert_roles.get(cn))
        raise Unauthenticated("missing credentials: send the metadata 'authorization: Bearer "
                              "<token>'", reason="MISSING_TOKEN")

    def _token(self, values: list[Any]) -> Principal:
        # Exactly two words: "Bearer <token> extra" is malformed, not an unknown token.
        words = str(values[0]).split()
        if len(values) > 1 or len(words) != 2 or words[0].lower() != "bearer":
            raise Unauthenticated("malformed authorization metadata: expected exactly one "
                                  "'authorization: Bearer <token>'", reason="MALFORMED_TOKEN")
        digest = hash_token(words[1])
        found = None
        for configured, principal in self._tokens:  # no early exit: the same work for all
            if hmac.compare_digest(configured, digest):
                found = principal
        if found is None:
            raise Unauthenticated("unknown bearer token", reason="UNKNOWN_TOKEN")
        return found


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Authenticates every RPC but health (and reflection, if public) before its method handler
    runs, and sets ``current_principal`` for the method handler. Only installed when
    ``settings.auth_enabled``."""

    def __init__(self, settings: Settings) -> None:
        self.authenticator = Authenticator(settings)
        self.reflection_public = settings.reflection_public

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails],
                                     Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        rpc_handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if rpc_handler is None or method.startswith(HEALTH_PREFIX) or (
                self.reflection_public and method.startswith(REFLECTION_PREFIX)):
            return rpc_handler
        return shapes.wrap(rpc_handler, self._admitted)

    @asynccontextmanager
    async def _admitted(self, context: grpc.aio.ServicerContext,
                        requests: AsyncIterator[Any] | None) -> AsyncIterator[None]:
        """Around one call: authenticate it and publish its principal before its behaviour
        runs, or end the RPC. ``requests``: a request stream's messages (None for a unary
        request, which grpc has read already).

        ``current_principal`` is set, never reset: the RPC's context ends with the RPC, and an
        async generator may be finalized from another context, where a reset would fail."""
        try:
            principal = self.authenticator.authenticate(context.invocation_metadata() or (),
                                                        context.auth_context() or {})
        except BatchdError as err:
            log.info("refused %s: %s", context.peer(), err.message)
            if requests is not None:
                await let_the_client_finish(requests)
            await context.abort_with_status(rpc_status.to_status(to_rpc_status(err)))
            raise AssertionError("abort_with_status returned") from None  # pragma: no cover
        current_principal.set(principal)
        yield


# How long a refused request stream is read, and for how long at most. See
# ``let_the_client_finish``.
REFUSED_QUIET_SECONDS = 0.2
REFUSED_MOST_SECONDS = 2.0


async def let_the_client_finish(requests: AsyncIterator[Any]) -> None:
    """Read (and drop) what the client of a refused request stream still sends, until it
    half-closes, pauses for ``REFUSED_QUIET_SECONDS`` (it waits for an answer), or
    ``REFUSED_MOST_SECONDS`` have passed; then the caller ends the call.

    Why: a server that ends a call before the client half-closes sends its trailers and then
    RST_STREAM, and a grpc.aio (Python) client whose write is in flight at that moment reports
    INTERNAL "Internal error from Core" instead of the status it received (grpc/grpc#36066;
    about half of the refusals of a client writing three messages). Once the client has stopped
    writing, every client sees the real status; reading only its first message (as grpc's
    asyncio auth example does, answering every method with a unary method handler) still left
    about one refusal in seven to INTERNAL. Unary requests need none of this: grpc reads them,
    and the client's half-close with them, before any method handler runs. The bounds keep a
    caller without credentials from holding the call open by writing on and on."""
    loop = asyncio.get_running_loop()
    ends = loop.time() + REFUSED_MOST_SECONDS
    messages = aiter(requests)
    while (left := ends - loop.time()) > 0:
        try:
            async with asyncio.timeout(min(REFUSED_QUIET_SECONDS, left)):
                await anext(messages)
        except (StopAsyncIteration, TimeoutError):
            return
        except Exception:  # a message that does not decode: nothing more to wait for
            return
