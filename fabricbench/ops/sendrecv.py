from fabricbench.ops.base import Call, Op


class SendRecv(Op):
    name, primitive = "sendrecv", "sendrecv"
    in_place_supported = False
    description = "ring: rank r sends to r+1 and receives from r-1 at the same time; busbw = algbw"

    def run(self, call: Call):
        n = call.nranks
        call.backend.sendrecv(call.send, call.recv, (call.rank + 1) % n, (call.rank - 1) % n)

    def expected(self, pattern, lay, rank, nranks, root):
        return pattern.values((rank - 1) % nranks, 0, lay.count)
