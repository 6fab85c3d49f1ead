from copytrace.app.cli.main import main

main()
