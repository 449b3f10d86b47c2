"""The baseline: a bare Flask endpoint that reads the body and answers 202."""

from flask import Flask, jsonify, request

app = Flask("bare")


@app.post("/<path:anything>")
def take(anything: str):  # noqa: ANN201
    body = request.get_data(cache=False)
    response = jsonify({"status": "accepted", "bytes": len(body)})
    response.status_code = 202
    return response
