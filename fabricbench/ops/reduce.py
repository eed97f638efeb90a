from fabricbench.ops.base import Call, Op


class Reduce(Op):
    name, primitive, reduces, rooted = "reduce", "reduce", True, True
    description = "the root ends with the reduction of all ranks' buffers; busbw = algbw"

    def run(self, call: Call):
        call.backend.reduce(call.send, call.recv, call.redop, call.root)

    def expected(self, pattern, lay, rank, nranks, root):
        return pattern.reduced(0, lay.count) if rank == root else None
