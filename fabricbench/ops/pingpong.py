from fabricbench.ops.base import Call, Op


class PingPong(Op):
    name, primitive = "pingpong", "send"
    exact_ranks, time_divisor = 2, 2
    in_place_supported = False
    description = ("2 ranks: rank 0 sends, rank 1 sends it back; time = half the round trip (one-way latency, "
                   "as OSU osu_latency); algbw = size / that time")

    def run(self, call: Call):
        b = call.backend
        if call.rank == 0:
            b.send(call.send, 1)
            b.recv(call.recv, 1)
        else:
            b.recv(call.recv, 0)
            b.send(call.recv, 0)  # echo what arrived

    def input(self, pattern, lay, rank, nranks, root):
        return pattern.values(0, 0, lay.send_count) if rank == 0 else None

    def expected(self, pattern, lay, rank, nranks, root):
        return pattern.values(0, 0, lay.count)
