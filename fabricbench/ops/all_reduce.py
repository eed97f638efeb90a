from fabricbench.ops.base import Call, Op


class AllReduce(Op):
    name, primitive, reduces = "all_reduce", "all_reduce", True
    description = "every rank ends with the reduction of all ranks' buffers; busbw = algbw × 2(n-1)/n"

    def busbw_factor(self, nranks):
        return 2 * (nranks - 1) / nranks

    def run(self, call: Call):
        call.backend.all_reduce(call.send, call.recv, call.redop)

    def expected(self, pattern, lay, rank, nranks, root):
        return pattern.reduced(0, lay.count)
