"""The pair runner: one process per node (per rail on GPU nodes), all rounds of a sweep in one long-lived step.

Every process reads the same plan (plan.json: nodes, rounds of disjoint pairs, sizes, deadlines) and works
through its own pairs round by round; nothing is started per pair except a two-rank communicator:

- each process hosts one small TCPStore for the whole sweep (on `port_base + rail`, or `+ rank` when every
  "node" is a local process); for a pair (a, b), b connects to a's store and both build a 2-rank
  ProcessGroupGloo (or ProcessGroupNCCL) under a key prefix unique to (phase, round, repeat, pair). There is
  no world communicator, so a dead or hung node can only fail its own pairs.
- per pair: warm-up ping-pongs, then for each size a->b (a streams `iters` messages, b acknowledges the last;
  a's clock), b->a (the same with the roles swapped; b's clock) and ping-pong (half the round trip). The
  iterations of each measurement are sized to `measure_target_s` from a timed round trip of that size (at
  most `iters`), so a slow fabric takes fewer iterations rather than missing its deadline.
- deadlines: a peer gets `connect_timeout_s` to show up (it may still be finishing its previous round), the
  pair's first exchange gets `pair_timeout_s`, and every later step a deadline derived from what the first
  exchanges measured; every wait is bounded by what is left, so a dead peer's pair fails with the reason
  and this process moves on to its next round. Rows are recorded as they are measured: a pair that fails
  part-way keeps what it measured.

Records are JSON lines appended (and flushed) to `<out>/records/<phase>-rank<R>.jsonl` as they are measured,
so a process killed mid-sweep keeps what it had; pandas, pyarrow and matplotlib are never imported here (the
collector builds the tables, once, on the launching host).
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

PLAN_VERSION = 1
RANK_ENV = "FABRICBENCH_SWEEP_RANK"  # local mode: this process's rank (the launcher sets it)
INJECT_ENV = "FABRICBENCH_SWEEP_INJECT"  # die@ | hang@NODE:round=R | slow@NODE:ms=M | stall@NODE:s=S (self-tests)
DIRECTIONS = ("a->b", "b->a", "pingpong")


@dataclass
class Plan:
    run_id: str
    out_dir: str
    nodes: list[str]
    rounds: list[dict]  # {"round": int, "repeat": int, "pairs": [[a, b], ...]} (node indices)
    sizes: list[int]
    iters: int = 20
    warmup: int = 5
    backend: str = "gloo"  # gloo | nccl
    phase: str = "sweep"  # sweep | retest
    tasks_per_node: int = 1  # > 1: per-rail, rank k of each node pairs with rank k of the others
    hcas: list[str] | None = None  # per rail: NCCL_IB_HCA for rank k (exact match)
    local: bool = False  # every node is a local process on 127.0.0.1
    port_base: int = 0
    connect_timeout_s: float = 30.0
    pair_timeout_s: float = 60.0  # the pair's first exchange; later steps get deadlines from what it measured
    measure_target_s: float = 2.0  # seconds one measurement (a size, a direction) aims at; 0 = fixed iters
    step_timeout_s: float = 600.0  # every process leaves by then, whatever its peers do
    ordered: bool = False  # round k starts only when every node of round k-1 has finished it (--serial)
    version: int = PLAN_VERSION
    extra: dict = field(default_factory=dict)

    def save(self, path: str | os.PathLike) -> Path:
        from fabricbench.atomic import atomic_write_text

        return atomic_write_text(path, json.dumps(asdict(self), indent=1) + "\n")  # fsynced, directory too

    @classmethod
    def load(cls, path: str | os.PathLike) -> Plan:
        from fabricbench import limits
        from fabricbench.errors import UsageError

        data = limits.load_json(path, "sweep plan")
        if not isinstance(data, dict) or data.get("version") != PLAN_VERSION:
            version = data.get("version") if isinstance(data, dict) else None
            raise UsageError(f"{path}: not a sweep plan of version {PLAN_VERSION} (found {version!r}); re-run the sweep")
        try:
            return cls(**data)
        except TypeError as err:
            raise UsageError(f"{path}: not a sweep plan ({err}); re-run the sweep") from None

    def pair_count(self) -> int:
        return sum(len(r["pairs"]) for r in self.rounds)

    def time_bound_s(self) -> float:
        """The longest the step can take if every pair runs into both deadlines."""
        return len(self.rounds) * (self.connect_timeout_s + self.pair_timeout_s) + 30.0


def records_dir(out_dir: str | os.PathLike) -> Path:
    return Path(out_dir) / "records"


class Recorder:
    """Append-only JSON lines, flushed per record (a kill keeps everything written before it)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(path, "a", buffering=1)

    def write(self, **record) -> None:
        self._fh.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


class PairFailed(Exception):
    pass


def _whoami(plan: Plan) -> tuple[int, int, int]:
    """(rank, node index, rail) of this process."""
    if plan.local:
        rank = int(os.environ[RANK_ENV])
        return rank, rank // plan.tasks_per_node, rank % plan.tasks_per_node
    rank = int(os.environ["SLURM_PROCID"])
    node = int(os.environ.get("SLURM_NODEID", rank // plan.tasks_per_node))
    rail = int(os.environ.get("SLURM_LOCALID", rank % plan.tasks_per_node))
    step_nodes = os.environ.get("SLURM_STEP_NODELIST")
    if step_nodes:  # the plan's node order must be the step's: index by name, not by position, to be safe
        import hostlist

        names = hostlist.expand_hostlist(step_nodes)
        if 0 <= node < len(names) and names[node] in plan.nodes:
            node = plan.nodes.index(names[node])
    return rank, node, rail


def _address(plan: Plan, node: int) -> str:
    return "127.0.0.1" if plan.local else plan.nodes[node]


def _port(plan: Plan, node: int, rail: int) -> int:
    return plan.port_base + (node * plan.tasks_per_node + rail if plan.local else rail)


def _injected(node_name: str, node: int) -> tuple[dict[int, str], float, float]:
    """({round: 'die'|'hang'}, seconds of delay before every send, seconds of stall) for this node, from
    FABRICBENCH_SWEEP_INJECT: `die@NODE:round=R` (SIGKILL itself at round R), `hang@NODE:round=R` (SIGSTOP
    itself: a hung node), `slow@NODE:ms=M` (a slow NIC: M ms before each message it sends), `stall@NODE:s=S`
    (S seconds of silence before its first pair's ping-pong: a measurement that misses its deadline after the
    pair's bandwidth rows were measured). NODE is a name or an index."""
    spec = os.environ.get(INJECT_ENV, "")
    out: dict[int, str] = {}
    delay = stall = 0.0
    for item in filter(None, (s.strip() for s in spec.split(","))):
        kind, _, rest = item.partition("@")
        who, _, opt = rest.partition(":")
        if who not in (node_name, str(node)):
            continue
        name, _, value = opt.partition("=")
        if kind in ("die", "hang"):
            out[int(value) if name == "round" else 0] = kind
        elif kind == "slow" and name == "ms":
            delay = float(value) / 1e3
        elif kind == "stall" and name == "s":
            stall = float(value)
    return out, delay, stall


class PairLink:
    """A two-rank communicator for one pair, with every wait bounded by the pair's deadline."""

    def __init__(self, plan: Plan, store, me: int, device, key: str):
        import torch
        import torch.distributed as dist

        self.torch, self.me, self.peer = torch, me, 1 - me
        self.device = device
        prefixed = dist.PrefixStore(key, store)
        timeout = datetime.timedelta(seconds=plan.connect_timeout_s)
        if plan.backend == "nccl":
            self.pg = dist.ProcessGroupNCCL(prefixed, me, 2, dist.ProcessGroupNCCL.Options())
        else:
            self.pg = dist.ProcessGroupGloo(prefixed, me, 2, timeout)
        self.deadline = time.monotonic() + plan.pair_timeout_s
        self.send_delay = 0.0  # injected (self-tests): a slow sender
        self.stall_s = 0.0  # injected (self-tests): silence before the first ping-pong

    def _wait(self, work, what: str) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise PairFailed(f"pair deadline passed during {what}")
        try:
            ok = work.wait(datetime.timedelta(seconds=left))
        except Exception as err:  # noqa: BLE001 - gloo/NCCL raise RuntimeError subclasses with the reason
            raise PairFailed(f"{what}: {_one_line(err)}") from None
        if ok is False:
            raise PairFailed(f"{what}: no completion before the pair deadline")

    def send(self, t, what: str) -> None:
        if self.send_delay:
            time.sleep(self.send_delay)
        self._wait(self.pg.send([t], self.peer, 0), what)

    def recv(self, t, what: str) -> None:
        self._wait(self.pg.recv([t], self.peer, 0), what)

    def sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)

    def close(self) -> None:
        try:
            if hasattr(self.pg, "abort") and self.device.type == "cuda":
                self.pg.abort()
        except Exception:  # noqa: BLE001
            pass
        self.pg = None


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    first = text.split(" Exception raised from ")[0]
    return (first[:300] + "...") if len(first) > 300 else first


MIN_ITERS = 2  # a measurement never times fewer messages than this, whatever its time target
DEADLINE_FACTOR = 4.0  # a step may take this many times what the pair's first exchanges predicted ...
DEADLINE_SLACK_S = 5.0  # ... plus this much (a busy node's scheduling, the acknowledgement, a retransmit)


def iterations_for(per_msg_s: float, target_s: float, most: int, messages_per_iter: int = 1) -> int:
    """How many iterations fit `target_s` at `per_msg_s` per message: between MIN_ITERS and `most` (-n).
    A target of 0 means fixed iterations (`most`)."""
    if target_s <= 0 or per_msg_s <= 0:
        return most
    fit = int(target_s / (per_msg_s * messages_per_iter))
    return max(min(MIN_ITERS, most), min(most, fit))


def _exchange(link: PairLink, i_am_a: bool, t, what: str) -> None:
    """One round trip: a sends, b sends it back."""
    if i_am_a:
        link.send(t, f"{what} send")
        link.recv(t, f"{what} receive")
    else:
        link.recv(t, f"{what} receive")
        link.send(t, f"{what} send")


def _agree(link: PairLink, i_am_a: bool, ctrl, values: tuple[float, ...] | None, what: str) -> tuple[float, ...]:
    """a tells b what it decided (iterations, predicted times): one tiny message, so both run the same counts."""
    if i_am_a:
        for i, v in enumerate(values):
            ctrl[i] = float(v)
        link.send(ctrl, what)
        return values
    link.recv(ctrl, what)
    return tuple(float(x) for x in ctrl.tolist())


def measure_pair(link: PairLink, plan: Plan, i_am_a: bool, buf, ack, ctrl, emit=None) -> list[dict]:
    """Warm-up, then per size a->b, b->a and ping-pong; returns the rows this rank timed and hands each one to
    `emit` as soon as it is measured (a pair that fails later keeps the directions it already measured).

    The work is sized to a time target: the first warm-up round trip (largest size) gives the pair's speed;
    a decides how many more warm-ups fit `measure_target_s` and, per size, after one timed round trip of that
    size, how many iterations (at most `iters`, at least MIN_ITERS) fit it; b is told. Deadlines follow from
    the same prediction (DEADLINE_FACTOR x predicted + DEADLINE_SLACK_S per step), so a slow fabric is measured
    with fewer iterations instead of failing a fixed deadline, and a stalled step fails in seconds, not
    minutes. Only the first round trip is bounded by `pair_timeout_s` (nothing is known before it)."""
    rows = []
    target, most = plan.measure_target_s, plan.iters
    big_size = plan.sizes[-1]
    big = buf.narrow(0, 0, max(1, big_size // 4))

    def within(predicted_s: float) -> None:
        link.deadline = time.monotonic() + DEADLINE_SLACK_S + DEADLINE_FACTOR * predicted_s

    def record(row: dict) -> None:
        rows.append(row)
        if emit is not None:
            emit(row)

    t0 = time.perf_counter()
    _exchange(link, i_am_a, big, "warm-up")  # connections, buffers, both directions; under pair_timeout_s
    first_rt = time.perf_counter() - t0
    more = max(0, min(plan.warmup - 1, int(target / first_rt) if target > 0 else plan.warmup - 1))
    within(1.0)
    more, rt_big, _ = _agree(link, i_am_a, ctrl, (more, first_rt, 0), "warm-up plan")
    sec_per_byte = rt_big / (2 * big_size)  # a's estimate; b uses the same one
    within(rt_big * more)
    for _ in range(int(more)):
        t0 = time.perf_counter()
        _exchange(link, i_am_a, big, "warm-up")
        rt_big = time.perf_counter() - t0  # the last one: the warmest estimate of the largest size
    for size in plan.sizes:
        msg = buf.narrow(0, 0, max(1, size // 4))
        if size == big_size and more:
            rt = rt_big
        else:
            within(2 * size * sec_per_byte)
            t0 = time.perf_counter()
            _exchange(link, i_am_a, msg, f"probe of {size} B")  # also this size's warm-up
            rt = time.perf_counter() - t0
        per_msg = rt / 2
        within(1.0)
        iters, pp_iters, per_msg = _agree(
            link, i_am_a, ctrl, (iterations_for(per_msg, target, most), iterations_for(per_msg, target, most, 2),
                                 per_msg), f"plan of {size} B")
        iters, pp_iters = int(iters), int(pp_iters)
        for direction in ("a->b", "b->a"):
            sender = (direction == "a->b") == i_am_a
            within(iters * per_msg)
            link.sync()
            t0_wall, t0 = time.time_ns(), time.perf_counter_ns()
            for _ in range(iters):
                if sender:
                    link.send(msg, f"{direction} send of {size} B")
                else:
                    link.recv(msg, f"{direction} receive of {size} B")
            if sender:
                link.recv(ack, f"{direction} acknowledgement")
            else:
                link.send(ack, f"{direction} acknowledgement")
            link.sync()
            elapsed = time.perf_counter_ns() - t0
            if sender:
                t_us = elapsed / 1e3 / iters
                record(dict(direction=direction, size_bytes=size, time_us=t_us,
                            algbw_gbps=size / (t_us * 1e3) if t_us > 0 else None, latency_us=None,
                            iters=iters, t_start_ns=t0_wall, t_end_ns=time.time_ns()))
        within(2 * pp_iters * per_msg)
        if link.stall_s:
            time.sleep(link.stall_s)
            link.stall_s = 0.0
        link.sync()
        t0_wall, t0 = time.time_ns(), time.perf_counter_ns()
        for _ in range(pp_iters):
            if i_am_a:
                link.send(msg, f"ping-pong send of {size} B")
                link.recv(msg, f"ping-pong receive of {size} B")
            else:
                link.recv(msg, f"ping-pong receive of {size} B")
                link.send(msg, f"ping-pong send of {size} B")
        link.sync()
        elapsed = time.perf_counter_ns() - t0
        if i_am_a:
            one_way = elapsed / 1e3 / pp_iters / 2
            record(dict(direction="pingpong", size_bytes=size, time_us=one_way,
                        algbw_gbps=size / (one_way * 1e3) if one_way > 0 else None, latency_us=one_way,
                        iters=pp_iters, t_start_ns=t0_wall, t_end_ns=time.time_ns()))
    return rows


PROGRESS_KEY = "fabricbench/progress"  # in each rank's own store: the index of the round it is working on


def _connect(plan: Plan, peer: int, rail: int, timeout: float | None = None):
    """A client of the peer's store; a peer whose store cannot be reached is gone."""
    import torch.distributed as dist

    if timeout is None:
        timeout = plan.connect_timeout_s  # the peer may still be starting (imports on a busy node)
    try:
        return _bounded(lambda: dist.TCPStore(_address(plan, peer), _port(plan, peer, rail), None, False,
                                              datetime.timedelta(seconds=timeout)), timeout + 2.0)
    except Exception as err:  # noqa: BLE001
        raise PairFailed(f"{plan.nodes[peer]} is not reachable: its sweep process did not answer within "
                         f"{timeout:g} s ({_one_line(err)})") from None


class _Prober:
    """Reads a peer's store with a real time limit: a stopped process's store accepts the connection but never
    answers, and the store client would wait forever, so the read runs in a helper thread that is abandoned
    (the process leaves with os._exit) when the peer does not answer in time."""

    def __init__(self, store, ready_key: str, timeout_s: float):
        self.store, self.key, self.timeout_s = store, ready_key, timeout_s

    def _read(self) -> tuple[bool, int]:
        if self.store.check([self.key]):
            return True, 0
        # -1: the peer's process is up but has not begun its first round (still starting)
        return False, int(self.store.get(PROGRESS_KEY)) if self.store.check([PROGRESS_KEY]) else -1

    def __call__(self) -> tuple[bool, int]:
        return _bounded(self._read, self.timeout_s)


def _bounded(fn, timeout_s: float):
    """fn() in a helper thread, abandoned after timeout_s (PairFailed): store clients block forever on a peer
    process that is stopped (the kernel accepts the connection, nothing ever answers)."""
    import threading

    box: list = []

    def run():
        try:
            box.append(fn())
        except BaseException as err:  # noqa: BLE001
            box.append(err)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout_s)
    if not box:
        raise PairFailed(f"no answer from its sweep process within {timeout_s:g} s (hung or stopped)")
    if isinstance(box[0], BaseException):
        raise box[0]
    return box[0]


def _meet(my_store, peer_store, key: str, me: str, index: int, plan: Plan, peer_name: str,
          hard_deadline: float) -> None:
    """Both sides of a pair say 'ready' in their own store and wait for the other's. While waiting, the peer's
    progress decides: behind us (still in an earlier round) -> keep waiting, it will come; past this round
    (it gave up on us) or unreachable (dead, stopped) -> the pair fails now; at this round but not ready ->
    wait up to connect_timeout. Nothing waits past the step's own deadline."""
    my_store.set(key + "ready/" + me, "1")
    other = key + "ready/" + ("b" if me == "a" else "a")
    same_round_since = None
    probe = _Prober(peer_store, other, min(plan.connect_timeout_s, 10.0))
    while True:
        try:
            ready, progress = probe()
        except Exception as err:  # noqa: BLE001
            raise PairFailed(f"{peer_name} stopped answering while this node waited for it "
                             f"({_one_line(err)})") from None
        if ready:
            return
        now = time.monotonic()
        if progress > index:
            raise PairFailed(f"{peer_name} moved past round {index} without this pair (it gave up waiting "
                             "for this node)")
        if progress == index:
            same_round_since = same_round_since or now
            if now - same_round_since > plan.connect_timeout_s:
                raise PairFailed(f"{peer_name} reached this round but did not join the pair within "
                                 f"{plan.connect_timeout_s:g} s")
        if now > hard_deadline:
            raise PairFailed(f"step deadline reached while waiting for {peer_name} (it was still in round "
                             f"{progress})")
        time.sleep(0.02)


def _wait_for_round(plan: Plan, index: int, node: int, rail: int, clients: dict, hard_deadline: float) -> None:
    """Ordered plans: wait until every node of the previous round has moved past it (its progress >= index).
    A node that cannot be reached is not waited for (it is dead: its pairs fail on their own)."""
    previous = {x for p in plan.rounds[index - 1]["pairs"] for x in p} - {node}
    for x in sorted(previous):
        try:
            if x not in clients:  # it ran the previous round, so it is up: a short timeout; refused = it left
                clients[x] = _connect(plan, x, rail, timeout=min(plan.connect_timeout_s, 3.0))
            store = clients[x]
            while time.monotonic() < hard_deadline:
                done = _bounded(lambda: store.check([PROGRESS_KEY]) and int(store.get(PROGRESS_KEY)) >= index,
                                min(plan.connect_timeout_s, 10.0))
                if done:
                    break
                time.sleep(0.01)
        except Exception:  # noqa: BLE001 - a dead node of the previous round does not hold this one up
            clients.pop(x, None)


def run_rank(plan_path: str) -> int:
    """Entry point of one sweep process (`fabricbench sweep _rank --plan FILE`)."""
    plan = Plan.load(plan_path)
    rank, node, rail = _whoami(plan)
    node_name = plan.nodes[node]
    host = socket.gethostname()
    rec = Recorder(records_dir(plan.out_dir) / f"{plan.phase}-rank{rank}.jsonl")
    base = dict(phase=plan.phase, rank=rank, node=node_name, rail=rail)
    rec.write(kind="start", host=host, pid=os.getpid(), t_ns=time.time_ns(), **base)
    if plan.hcas and plan.backend == "nccl":  # before NCCL starts: NCCL reads it once per process
        os.environ["NCCL_IB_HCA"] = "=" + plan.hcas[rail % len(plan.hcas)]
    import torch
    import torch.distributed as dist

    if plan.backend == "nccl":
        device = torch.device("cuda", rail % max(1, torch.cuda.device_count()))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    try:
        my_store = dist.TCPStore("0.0.0.0" if not plan.local else "127.0.0.1", _port(plan, node, rail), None,
                                 True, datetime.timedelta(seconds=plan.connect_timeout_s),
                                 wait_for_workers=False)
    except Exception as err:  # noqa: BLE001
        rec.write(kind="fatal", error=f"cannot listen on port {_port(plan, node, rail)}: {_one_line(err)}", **base)
        print(f"fabricbench: error: sweep rank {rank} on {node_name}: cannot listen on port "
              f"{_port(plan, node, rail)}: {_one_line(err)}", file=sys.stderr)
        return 1
    buf = torch.ones(max(1, max(plan.sizes) // 4), dtype=torch.float32, device=device)
    ack = torch.zeros(1, dtype=torch.float32, device=device)
    ctrl = torch.zeros(3, dtype=torch.float64, device=device)
    faults, send_delay, stall_s = _injected(node_name, node)
    clients: dict[int, object] = {}  # store clients of other nodes, for --serial ordering
    hard_deadline = time.monotonic() + plan.step_timeout_s - 5.0
    ok = failed = 0
    for index, rnd in enumerate(plan.rounds):
        number, repeat = rnd["round"], rnd.get("repeat", 0)
        my_store.set(PROGRESS_KEY, str(index))
        fault = faults.get(number)
        if fault == "die":
            os.kill(os.getpid(), signal.SIGKILL)
        if fault == "hang":  # the whole process stops, as a node that hangs: its peers must time out on it
            print(f"fabricbench: injected hang on {node_name} at round {number}", file=sys.stderr, flush=True)
            os.kill(os.getpid(), signal.SIGSTOP)
        mine = [p for p in rnd["pairs"] if node in p]
        if not mine:
            continue
        if plan.ordered and index > 0:
            _wait_for_round(plan, index, node, rail, clients, hard_deadline)
        a, b = mine[0]
        i_am_a = node == a
        peer = b if i_am_a else a
        pair = dict(round=number, repeat=repeat, node_a=plan.nodes[a], node_b=plan.nodes[b])
        key = f"{plan.phase}/{repeat}/{number}/{a}-{b}/"
        peer_store = link = None
        t_pair = time.monotonic()
        try:
            peer_store = _connect(plan, peer, rail)
            _meet(my_store, peer_store, key, "a" if i_am_a else "b", index, plan, plan.nodes[peer], hard_deadline)
            try:
                link = PairLink(plan, my_store if i_am_a else peer_store, 0 if i_am_a else 1, device, key)
                link.send_delay = send_delay
                link.stall_s, stall_s = stall_s, 0.0
            except Exception as err:  # noqa: BLE001
                raise PairFailed(f"{plan.nodes[peer]} did not complete the connection within "
                                 f"{plan.connect_timeout_s:g} s ({_one_line(err)})") from None
            measure_pair(link, plan, i_am_a, buf, ack, ctrl,
                         emit=lambda row: rec.write(kind="row", status="ok", host=host, warmup=plan.warmup,
                                                    backend=plan.backend, device=device.type, **pair, **row,
                                                    **base))
            rec.write(kind="pair_done", seconds=time.monotonic() - t_pair, **pair, **base)
            ok += 1
        except PairFailed as err:
            failed += 1
            text = str(err)
            if plan.nodes[peer] not in text:
                text = f"with {plan.nodes[peer]}: {text}"
            rec.write(kind="pair_failed", error=text, peer=plan.nodes[peer], seconds=time.monotonic() - t_pair,
                      **pair, **base)
            print(f"fabricbench: round {number}: pair {plan.nodes[a]}-{plan.nodes[b]} failed: {text}",
                  file=sys.stderr, flush=True)
        finally:
            if link is not None:
                link.close()
            del peer_store
    my_store.set(PROGRESS_KEY, str(len(plan.rounds)))
    rec.write(kind="done", pairs_ok=ok, pairs_failed=failed, t_ns=time.time_ns(), **base)
    rec.close()
    # Peers may still be connecting to our store for a pair that we already gave up on: leave promptly anyway.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def main(argv: list[str] | None = None) -> int:
    """`python -m fabricbench.slurm.sweep --plan FILE`: the rank entry point. It does not go through the
    `fabricbench` command (which loads every area), so a rank imports torch and the stdlib and nothing else."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m fabricbench.slurm.sweep")
    parser.add_argument("--plan", required=True, help="plan.json written by 'fabricbench sweep pairwise'")
    args = parser.parse_args(argv)
    try:
        return run_rank(args.plan)
    except (OSError, ValueError, KeyError) as err:
        print(f"fabricbench: error: sweep rank: {err}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
