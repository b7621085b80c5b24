from cxrprobe.cli import main

main()
