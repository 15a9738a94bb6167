"""OpenEnv: any ttd env as an OpenEnv environment server, and the client that talks to it.

Serve one env locally (a plain process; the same app runs in a container):

    python -m ttd_envs.integrations.openenv ttd/LABS-v0 --port 8000 --env-arg n=24
    python -m ttd_envs.integrations.openenv my_problem.py:MyProblem      # a problem of your own

and from the training side (TRL, SkyRL, TorchRL, ... or plain Python):

    from ttd_envs.integrations.openenv import TtdAction, TtdEnvClient
    with TtdEnvClient(base_url="http://localhost:8000").sync() as env:
        result = env.reset(seed=0)                         # result.observation.prompt
        result = env.step(TtdAction(answer="+-+--..."))    # result.reward, result.done

`reset(seed, episode_id, state=<State JSON>)` starts from the env's initial state or from any
earlier state; `step` is `DiscoveryEnv.step`: the problem's sandboxed evaluation, reward, done
(after `max_turns` attempts). Each WebSocket session gets its own env; the problem (and its warm
sandbox) is shared between sessions. ttd/MathVote-v0 (a group reward) is not served.
"""

from __future__ import annotations

import socket
from typing import Any
from uuid import uuid4

from openenv.core.client_types import StepResult
from openenv.core.env_client import EnvClient
from openenv.core.env_server import Action, Environment, Observation, State, create_app
from pydantic import Field
from starlette.websockets import WebSocketDisconnect

from ttd_envs.core.arguments import OneLineParser, env_arg
from ttd_envs.core.env import DiscoveryEnv
from ttd_envs.integrations import common


class TtdAction(Action):
    answer: str = Field(description="The model's whole answer (e.g. a fenced code block)")


class TtdObservation(Observation):
    prompt: str = Field(default="", description="The problem and the state to improve")
    score: float | None = Field(default=None, description="The problem's own metric for the last answer")
    valid: bool = Field(default=True, description="Whether the last answer was valid")
    error: str | None = Field(default=None, description="What was wrong with the last answer")
    state: str | None = Field(default=None, description="The current State as JSON (reset(state=...) resumes it)")


class TtdEnvironment(Environment[TtdAction, TtdObservation, State]):
    """One session: a `DiscoveryEnv` over the shared problem of (env id, options)."""

    SUPPORTS_CONCURRENT_SESSIONS = True

    def __init__(self, env_id: str, max_turns: int = 1, env_kwargs: dict[str, Any] | None = None) -> None:
        super().__init__()
        if common.is_group_env(env_id):
            raise ValueError(f"{env_id} rewards a group of answers by majority vote; OpenEnv steps one answer. "
                             "Serve ttd/MathAnswer-v0, or use the verifiers/TRL/verl adapters for the vote")
        self.env = DiscoveryEnv(common.problem_for(env_id, env_kwargs), max_turns=max_turns)
        self._state = State(episode_id=None, step_count=0)

    def reset(self, seed: int | None = None, episode_id: str | None = None, state: str | None = None,
              **kwargs: Any) -> TtdObservation:
        options = None if state is None else {"state": common.parse_state(state)}
        prompt, info = self.env.reset(seed=seed, options=options)
        self._state = State(episode_id=episode_id or uuid4().hex, step_count=0)
        return TtdObservation(prompt=prompt, score=info["score"], state=info["state"].to_json())

    def step(self, action: TtdAction, timeout_s: float | None = None, **kwargs: Any) -> TtdObservation:
        prompt, reward, terminated, truncated, info = self.env.step(action.answer)
        self._state.step_count += 1
        current = self.env.state
        return TtdObservation(prompt=prompt, reward=reward, done=bool(terminated or truncated), score=info["score"],
                              valid=bool(info["valid"]), error=info["error"],
                              state=None if current is None else current.to_json())

    @property
    def state(self) -> State:
        return self._state


def make_app(env_id: str, max_turns: int = 1, env_kwargs: dict[str, Any] | None = None,
             max_concurrent_envs: int = 8) -> Any:
    """The FastAPI app serving `env_id` (OpenEnv's HTTP + WebSocket protocol)."""
    TtdEnvironment(env_id, max_turns, env_kwargs)  # a bad id, option or max_turns fails here, not in a session
    app = create_app(lambda: TtdEnvironment(env_id, max_turns, env_kwargs), TtdAction, TtdObservation,
                     env_name=env_id.replace("/", "-"), max_concurrent_envs=max_concurrent_envs)
    app.add_middleware(QuietClientGoodbye)
    return app


class QuietClientGoodbye:
    """OpenEnv's WebSocket endpoint closes the socket after a session even when the client has
    closed it first; starlette then raises WebSocketDisconnect and uvicorn logs a 40-line
    traceback for an ordinary goodbye (seen under load, when the client's close wins the race).
    The session is destroyed by then: nothing is lost by ending the connection quietly."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            await self.app(scope, receive, send)
        except WebSocketDisconnect:
            if scope["type"] != "websocket":
                raise


class TtdEnvClient(EnvClient[TtdAction, TtdObservation, State]):
    def _step_payload(self, action: TtdAction) -> dict[str, Any]:
        return action.model_dump()

    def _parse_result(self, payload: dict[str, Any]) -> StepResult[TtdObservation]:
        observation = TtdObservation(**payload.get("observation", {}), reward=payload.get("reward"),
                                     done=payload.get("done", False))
        return StepResult(observation=observation, reward=payload.get("reward"), done=payload.get("done", False))

    def _parse_state(self, payload: dict[str, Any]) -> State:
        return State(**payload)


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound and listening, so the address printed is the one served (port 0: a free one)."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    parser = OneLineParser(prog="python -m ttd_envs.integrations.openenv",
                           description="Serve one ttd env with OpenEnv's protocol (HTTP + WebSocket), for "
                                       "TRL, SkyRL, TorchRL or any OpenEnv client: each session gets its own "
                                       "env; the problem's sandbox is shared. See docs/integrations.md.")
    parser.add_argument("env_id", metavar="ENV",
                        help="a ttd env id (see `ttd-agent envs`; not ttd/MathVote-v0), FILE.py:ProblemClass, "
                             "or module:ProblemClass")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: %(default)s; 0.0.0.0 for every interface)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default: %(default)s; 0 picks a free one)")
    parser.add_argument("--max-turns", type=int, default=1,
                        help="attempts per episode, each from the newest valid state (default: %(default)s)")
    parser.add_argument("--max-sessions", type=int, default=8,
                        help="concurrent WebSocket sessions, one env each (default: %(default)s)")
    parser.add_argument("--env-arg", type=env_arg, action="append", default=[], metavar="KEY=VALUE",
                        help="an env option, repeatable (JSON values are parsed: n=24, initial=record)")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be in 0..65535, got {args.port}")
    for flag, value in (("--max-turns", args.max_turns), ("--max-sessions", args.max_sessions)):
        if value < 1:
            parser.error(f"{flag} must be >= 1, got {value}")
    try:
        app = make_app(args.env_id, args.max_turns, dict(args.env_arg), args.max_sessions)
    except Exception as error:  # a user's FILE.py may raise anything on import; one line, not a traceback
        text = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
        parser.exit(2, f"error: {text}\n")
    try:
        sock = listening_socket(args.host, args.port)
    except OSError as error:
        parser.exit(1, f"error: cannot listen on {args.host}:{args.port}: {error.strerror or error} "
                       "(choose another --port or --host)\n")
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"serving {args.env_id} on http://{shown}:{port} ({args.max_sessions} sessions at most; Ctrl-C stops)",
          flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn shuts down gracefully, then re-raises the signal
        pass
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
