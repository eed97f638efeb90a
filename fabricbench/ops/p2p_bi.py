from fabricbench.ops.base import Call, Layout, Op


class P2PBi(Op):
    """OSU osu_bibw: per call, both ranks post a window of non-blocking receives, then a window of
    non-blocking sends, and wait for all of them. Time is per message pair (call time / window); algbw counts
    both directions (2 x size / time), as osu_bibw reports."""

    name, primitive = "p2p_bi", "sendrecv"
    exact_ranks = 2
    in_place_supported = False
    description = ("2 ranks, as OSU osu_bibw: both send a window of messages (--window, default 64) to each other "
                   "at once; algbw counts both directions (2 x size / time per message)")

    def layout(self, size_bytes, itemsize, nranks, rank):
        count = size_bytes // itemsize
        return Layout(count, count, count, 2 * count * itemsize)

    def messages_per_call(self, window: int) -> int:
        return window

    def run(self, call: Call):
        call.backend.exchange_window(call.send, call.recv, 1 - call.rank, call.window)

    def expected(self, pattern, lay, rank, nranks, root):
        return pattern.values(1 - rank, 0, lay.count)
