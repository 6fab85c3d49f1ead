from copytrace.app.cli.commands import main

main()
