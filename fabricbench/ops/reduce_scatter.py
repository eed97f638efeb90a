from fabricbench.ops.base import Call, Layout, Op, aligned_block


class ReduceScatter(Op):
    name, primitive, reduces = "reduce_scatter", "reduce_scatter", True
    description = "rank r ends with block r of the reduction; size = input bytes; busbw = algbw × (n-1)/n"

    def layout(self, size_bytes, itemsize, nranks, rank):
        block = aligned_block(size_bytes, itemsize, nranks)
        return Layout(block * nranks, block, block, block * nranks * itemsize,
                      recv_inplace_offset=rank * block)

    def busbw_factor(self, nranks):
        return (nranks - 1) / nranks

    def run(self, call: Call):
        call.backend.reduce_scatter(call.send, call.recv, call.redop)

    def expected(self, pattern, lay, rank, nranks, root):
        return pattern.reduced(rank * lay.count, lay.count)
