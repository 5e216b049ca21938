"""header_mutation mutations that break a message: removed or emptied
pseudo-headers, connection-specific headers added. The proxy must not
crash and must answer (a 503 for a missing :method or :path, a 502 for an
empty one). Mutations of a response's :status are refused at load
(test_header_mutation.py)."""
import pytest

from conftest import h1_request, h2_request
from test_header_mutation import append, mutations, remove, start


@pytest.mark.parametrize("down", ["h1", "h2"])
@pytest.mark.parametrize("req", [remove(":path"), remove(":method"), remove(":authority"), remove("host"),
                                 remove(":scheme"),
                                 append("transfer-encoding", "chunked"), append("connection", "close"),
                                 append(":path", "", "OVERWRITE_IF_EXISTS_OR_ADD", keep_empty=True),
                                 append(":method", "", "OVERWRITE_IF_EXISTS_OR_ADD", keep_empty=True),
                                 append(":authority", "", "OVERWRITE_IF_EXISTS_OR_ADD", keep_empty=True)])
def test_request_mutation_breaks_message(procs, path_upstream, down, req):
    listen = start(procs, path_upstream.port, mutations(req=req))
    do = h2_request if down == "h2" else h1_request
    st, _, _ = do(listen, "/x")
    assert st in (200, 502, 503), st
    assert procs[-1].p.poll() is None


@pytest.mark.parametrize("down", ["h1", "h2"])
@pytest.mark.parametrize("resp", [append("transfer-encoding", "chunked"), append("connection", "close"),
                                  remove("content-length")])
def test_response_mutation_breaks_message(procs, path_upstream, down, resp):
    listen = start(procs, path_upstream.port, mutations(resp=resp))
    do = h2_request if down == "h2" else h1_request
    st, _, _ = do(listen, "/x")
    assert st in (200, 502, 503), st
    assert procs[-1].p.poll() is None
