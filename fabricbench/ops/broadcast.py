from fabricbench.ops.base import Call, Op


class Broadcast(Op):
    name, primitive, rooted = "broadcast", "broadcast", True
    description = "every rank ends with the root's buffer; busbw = algbw"

    def run(self, call: Call):
        call.backend.broadcast(call.send, call.recv, call.root)

    def input(self, pattern, lay, rank, nranks, root):
        return pattern.values(root, 0, lay.send_count) if rank == root else None

    def expected(self, pattern, lay, rank, nranks, root):
        return pattern.values(root, 0, lay.count)
