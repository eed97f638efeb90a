from fabricbench.ops.base import Call, Layout, Op


class P2PBi(Op):
    name, primitive = "p2p_bi", "sendrecv"
    exact_ranks = 2
    in_place_supported = False
    description = ("2 ranks send to each other at the same time; algbw counts both directions "
                   "(2 × size / time, as OSU osu_bibw)")

    def layout(self, size_bytes, itemsize, nranks, rank):
        count = size_bytes // itemsize
        return Layout(count, count, count, 2 * count * itemsize)

    def run(self, call: Call):
        peer = 1 - call.rank
        call.backend.sendrecv(call.send, call.recv, peer, peer)

    def expected(self, pattern, lay, rank, nranks, root):
        return pattern.values(1 - rank, 0, lay.count)
