"""The REST error mapping and body conversions, without a server."""

from __future__ import annotations

import json

import pytest

from ortserve.serve import errors
from ortserve.serve.http_api import error_response
from ortserve.serve.http_tensors import json_tensor_bytes, parse_header

EXPECTED_STATUS = {
    errors.InvalidArgument: 400,
    errors.FailedPrecondition: 400,
    errors.ModelLoadError: 400,
    errors.NotFound: 404,
    errors.ResourceExhausted: 429,
    errors.Unavailable: 503,
    errors.QueueFull: 503,
    errors.QueueTimeout: 503,
    errors.DeadlineExceeded: 504,
    errors.Cancelled: 499,
    errors.InternalError: 500,
}


@pytest.mark.parametrize("error_type", list(EXPECTED_STATUS), ids=lambda t: t.__name__)
def test_each_serve_error_has_its_status(error_type):
    response = error_response(error_type("what went wrong"), "test")
    assert response.status == EXPECTED_STATUS[error_type]
    message = "internal error" if error_type is errors.InternalError else "what went wrong"
    assert json.loads(response.body) == {"error": message}


def test_every_serve_error_is_in_the_table():
    def all_subclasses(cls):
        return {cls} | {sub for child in cls.__subclasses__() for sub in all_subclasses(child)}

    assert all_subclasses(errors.ServeError) - {errors.ServeError} <= set(EXPECTED_STATUS)


def test_other_exceptions_are_500_without_details(caplog):
    response = error_response(KeyError("secret detail"), "GET /v2/x")
    assert response.status == 500
    assert json.loads(response.body) == {"error": "internal error"}
    assert "secret detail" in caplog.text  # the details go to the server log only


def test_nested_data_of_any_depth_is_flattened_without_recursion():
    deep = 0
    for _ in range(5000):
        deep = [deep]
    assert len(json_tensor_bytes("t", "INT32", [1], deep)) == 4


def test_deeply_nested_json_is_a_clear_error():
    with pytest.raises(errors.InvalidArgument, match="not valid JSON"):
        parse_header(b"[" * 100_000 + b"]" * 100_000, None)
