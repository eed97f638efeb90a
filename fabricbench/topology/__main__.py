from fabricbench.topology.cli import standalone_main

standalone_main()
