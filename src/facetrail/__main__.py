from facetrail.cli import main

main()
