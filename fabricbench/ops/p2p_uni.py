from fabricbench.ops.base import Call, Op


class P2PUni(Op):
    name, primitive = "p2p_uni", "send"
    exact_ranks = 2
    in_place_supported = False
    description = ("2 ranks: rank 0 streams messages to rank 1, which acknowledges the last one; "
                   "algbw = size / time per message")

    def run(self, call: Call):
        if call.rank == 0:
            call.backend.send(call.send, 1)
        else:
            call.backend.recv(call.recv, 0)

    def finish(self, call: Call):
        # The sender's clock stops only when the receiver has everything: a one-element acknowledgement.
        if call.rank == 0:
            call.backend.recv(call.scratch, 1)
        else:
            call.backend.send(call.scratch, 0)

    def input(self, pattern, lay, rank, nranks, root):
        return pattern.values(0, 0, lay.send_count) if rank == 0 else None

    def expected(self, pattern, lay, rank, nranks, root):
        return pattern.values(0, 0, lay.count) if rank == 1 else None
