from fabricbench.ops.base import Call, Op


class P2PUni(Op):
    """OSU osu_bw: per call, rank 0 posts a window of non-blocking sends of the same buffer and waits for them;
    rank 1 posts as many receives, waits, and answers with a one-element acknowledgement that rank 0 waits
    for. Time is per message (call time / window); per-iteration timing times one window and its one
    acknowledgement, so it never becomes a round trip per message."""

    name, primitive = "p2p_uni", "send"
    exact_ranks = 2
    in_place_supported = False
    description = ("2 ranks, as OSU osu_bw: rank 0 sends a window of messages (--window, default 64) non-blocking, "
                   "rank 1 acknowledges each window; algbw = size / time per message")

    def messages_per_call(self, window: int) -> int:
        return window

    def run(self, call: Call):
        b = call.backend
        if call.rank == 0:
            b.send_window(call.send, 1, call.window)
            b.recv(call.scratch, 1)  # the window's acknowledgement
        else:
            b.recv_window(call.recv, 0, call.window)
            b.send(call.scratch, 0)

    def input(self, pattern, lay, rank, nranks, root):
        return pattern.values(0, 0, lay.send_count) if rank == 0 else None

    def expected(self, pattern, lay, rank, nranks, root):
        return pattern.values(0, 0, lay.count) if rank == 1 else None
