from ragcli import main

main()
