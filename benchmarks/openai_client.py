"""What the OpenAI-compatible client costs when nothing fails, against the urllib call it replaced.

A local HTTP/1.1 server answers every chat completion at once with the same small JSON, so the
time measured is the client's own: building the request, the connection, reading and parsing
the answer, the accounting. Both sides send the same requests `--concurrency` at a time:
- `urllib`: `urllib.request.urlopen(timeout=...)`, a new connection per request (the sampler
  before this client);
- `OpenAIClient`: `complete` through `fan_out`, with the per-attempt deadline, retry loop and
  stats, one keep-alive connection per worker thread.
Rounds alternate between the two, and the table gives each one's median, so both see the same
machine load.

    python -m benchmarks.openai_client [--requests 1000] [--concurrency 16] [--rounds 3] [--write]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import statistics
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from benchmarks._report import markdown_table, write_section
from ttd_agent.policy.openai_client import OpenAIClient, fan_out
from ttd_agent.policy.settings import LLMSettings

ANSWER = json.dumps({"choices": [{"message": {"role": "assistant", "content": "x" * 200}, "finish_reason": "stop"}],
                     "usage": {"prompt_tokens": 100, "completion_tokens": 50}}).encode()


class Answer(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # as uvicorn and vLLM's server do: headers and body go out at once

    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(ANSWER)))
        self.end_headers()
        self.wfile.write(ANSWER)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256


def body(seed: int) -> dict:
    return {"model": "m", "messages": [{"role": "user", "content": "p" * 2000}], "seed": seed, "temperature": 1.0}


def with_urllib(url: str, requests: int, concurrency: int) -> float:
    def one(seed: int) -> str:
        request = urllib.request.Request(f"{url}/chat/completions", data=json.dumps(
            {**body(seed), "max_tokens": 64}).encode(), headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=600) as response:
            return json.loads(response.read())["choices"][0]["message"]["content"]

    start = time.perf_counter()
    with cf.ThreadPoolExecutor(concurrency) as pool:
        assert all(pool.map(one, range(requests)))
    return time.perf_counter() - start


def with_client(url: str, requests: int, concurrency: int) -> float:
    client = OpenAIClient(LLMSettings(base_url=url, request_concurrency=concurrency))
    answers: list[str] = []
    calls = [lambda seed=seed: client.complete("/chat/completions", body(seed), 64,
                                               lambda a: a["choices"][0]["message"]["content"])
             for seed in range(requests)]
    start = time.perf_counter()
    fan_out(calls, concurrency, lambda k, text: answers.append(text))
    elapsed = time.perf_counter() - start
    stats = client.drain_stats()
    assert len(answers) == requests == stats["requests"] and stats["request_retries"] == 0
    return elapsed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write", action="store_true", help="write the table into docs/benchmarks.md")
    args = parser.parse_args(argv)
    server = Server(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    times: dict[str, list[float]] = {"urllib (before)": [], "OpenAIClient": []}
    try:
        for _ in range(args.rounds):
            times["urllib (before)"].append(with_urllib(url, args.requests, args.concurrency))
            times["OpenAIClient"].append(with_client(url, args.requests, args.concurrency))
    finally:
        server.shutdown()
        server.server_close()
    base = statistics.median(times["urllib (before)"])
    rows = [[name, f"{args.requests / statistics.median(t):,.0f}", f"{1e3 * statistics.median(t) / args.requests:.2f}",
             f"{base / statistics.median(t):.2f}x"] for name, t in times.items()]
    table = markdown_table(["client", "requests/s", "ms per request", "speed vs urllib"], rows)
    text = (f"### OpenAI-compatible client, nothing failing (`python -m benchmarks.openai_client`)\n\n"
            f"{args.requests} chat completions, {args.concurrency} in flight, against a local server that answers "
            f"at once; median of {args.rounds} alternating rounds.\n\n{table}\n")
    print(text)
    if args.write:
        write_section("openai-client", text)


if __name__ == "__main__":
    main()
