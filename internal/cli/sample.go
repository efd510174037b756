package cli

import (
	"fmt"
	"io"
	"math"
	"net/netip"
	"strings"

	"github.com/portres/portres/winsock"
	"github.com/spf13/cobra"
)

func init() { extraCommands = append(extraCommands, sampleCmd) }

func sampleCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "sample <addressfamily> <type> <protocol> <StartingPort> <NumberOfPorts>",
		Short: "Run the sample program of the SIO_ACQUIRE_PORT_RESERVATION documentation",
		Long: `sample is the C sample of Microsoft's SIO_ACQUIRE_PORT_RESERVATION page,
ported call for call onto the winsock package: it opens a socket, acquires
a runtime reservation of NumberOfPorts ports from StartingPort (0: the
broker places the block in the dynamic range), opens a second socket,
associates it with the reservation, binds it to port 0 and prints the port
it got, then releases the reservation and closes both sockets. It prints
what the C program prints, with the Winsock error numbers, and exits 1
where it returns 1.

The numbers are the platform's: AF_INET=2, AF_INET6=10 (23 on Windows),
SOCK_STREAM=1, SOCK_DGRAM=2, IPPROTO_TCP=6, IPPROTO_UDP=17.`,
		Example: "  portres sample 2 2 17 5000 20\n  portres sample 10 1 6 0 5",
		Args:    cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			winsock.SetBrokerSocket(e.socket)
			if status := sample(e.stdout, cmd.CommandPath(), args); status != 0 {
				return exitError(status)
			}
			return nil
		},
	}
	// Flags end at the first argument, so "-1" is a number, as in C.
	cmd.Flags().SetInterspersed(false)
	return cmd
}

// sample is wmain of the C sample; argv0 is the program name it prints.
// It keeps the sample's intent where the published code slips: the
// second socket, not the first, is associated and bound.
func sample(w io.Writer, argv0 string, args []string) int {
	wprintf := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }
	code := func(err error) uint32 { return uint32(winsock.ErrorCode(err)) }

	// Validate the parameters
	if len(args) != 5 {
		wprintf("usage: %s <addressfamily> <type> <protocol> <StartingPort> <NumberOfPorts>\n", argv0)
		wprintf("Opens a socket for the specified family, type, & protocol\n")
		wprintf("and then acquires a runtime port reservation for the protocol specified\n")
		wprintf("%s example usage\n", argv0)
		wprintf("   %s 2 2 17 5000 20\n", argv0)
		wprintf("   where AF_INET=2 SOCK_DGRAM=2 IPPROTO_UDP=17 StartPort=5000 NumPorts=20\n")
		return 1
	}
	iFamily, iType, iProtocol := wtoi(args[0]), wtoi(args[1]), wtoi(args[2])
	startPort := wtoi(args[3])
	if startPort < 0 || startPort > 65535 {
		wprintf("Starting point must be either 0 or between 1 and 65,535\n")
		return 1
	}
	startPortns := winsock.Htons(uint16(startPort)) // network byte order
	numPorts := wtoi(args[4])
	if numPorts < 0 {
		wprintf("Number of ports must be a positive number\n")
		return 1
	}
	portRange := winsock.INET_PORT_RANGE{StartPort: startPortns, NumberOfPorts: uint16(numPorts)}

	// Initialize Winsock
	if err := winsock.WSAStartup(); err != nil {
		wprintf("WSAStartup failed with error = %d\n", code(err))
		return 1
	}
	defer winsock.WSACleanup()

	sock, err := winsock.NewSocket(iFamily, iType, iProtocol)
	if err != nil {
		wprintf("socket function failed with error = %d\n", code(err))
		return 1
	}
	wprintf("socket function succeeded\n")
	in, _ := portRange.MarshalBinary()
	out := make([]byte, winsock.SizeofInetPortReservationInstance)
	bytesReturned, err := sock.WSAIoctl(winsock.SIO_ACQUIRE_PORT_RESERVATION, in, out, nil, nil)
	if err != nil {
		wprintf("WSAIoctl(SIO_ACQUIRE_PORT_RESERVATION) failed with error = %d\n", code(err))
		sock.Close()
		return 1
	}
	wprintf("WSAIoctl(SIO_ACQUIRE_PORT_RESERVATION) succeeded, bytesReturned = %d\n", bytesReturned)
	var portRes winsock.INET_PORT_RESERVATION_INSTANCE
	portRes.UnmarshalBinary(out)
	wprintf("  Starting port=%d,  Number of Ports=%d, Token=%d\n",
		winsock.Htons(portRes.Reservation.StartPort), portRes.Reservation.NumberOfPorts, int64(portRes.Token.Token))
	token, _ := portRes.Token.MarshalBinary()

	sockRes, err := winsock.NewSocket(iFamily, iType, iProtocol)
	if err != nil {
		wprintf("socket function for second socket failed with error = %d\n", code(err))
		sock.Close()
		return 1
	}
	wprintf("socket function for second socket succeeded\n")
	sampleBind(wprintf, code, sockRes, token)

	// comment out this block of code if you don't want to delete the reservation just created
	bytesReturned, err = sock.WSAIoctl(winsock.SIO_RELEASE_PORT_RESERVATION, token, nil, nil, nil)
	if err != nil {
		wprintf("WSAIoctl(SIO_RELEASE_PORT_RESERVATION) failed with error = %d\n", code(err))
	} else {
		wprintf("WSAIoctl(SIO_RELEASE_PORT_RESERVATION) succeeded, bytesReturned = %d\n", bytesReturned)
	}
	if err := sockRes.Close(); err != nil {
		wprintf("closesocket for second socket failed with error = %d\n", code(err))
	}
	if err := sock.Close(); err != nil {
		wprintf("closesocket for first socket failed with error = %d\n", code(err))
	}
	return 0
}

// sampleBind associates sockRes with the reservation token, binds it to
// the family's wildcard address and port 0, and prints the port.
func sampleBind(wprintf func(string, ...any), code func(error) uint32, sockRes *winsock.Socket, token []byte) {
	bytesReturned, err := sockRes.WSAIoctl(winsock.SIO_ASSOCIATE_PORT_RESERVATION, token, nil, nil, nil)
	if err != nil {
		wprintf("WSAIoctl(SIO_ASSOCIATE_PORT_RESERVATION) failed with error = %d\n", code(err))
		return
	}
	wprintf("WSAIoctl(SIO_ASSOCIATE_PORT_RESERVATION) succeeded, bytesReturned = %d\n", bytesReturned)
	// INADDR_ANY (in6addr_any for AF_INET6), port 0
	if err := sockRes.Bind(netip.AddrPort{}); err != nil {
		wprintf("bind failed with error = %d\n", code(err))
		return
	}
	wprintf("bind succeeded\n")
	sockName, err := sockRes.Getsockname()
	if err != nil {
		wprintf("getsockname failed with error = %d\n", code(err))
		return
	}
	wprintf("getsockname succeeded\n")
	wprintf("Port number allocated = %d\n", sockName.Port())
}

// wtoi is _wtoi: leading white space, an optional sign, then decimal
// digits up to the first other character; 0 if there are none;
// INT_MAX or INT_MIN when the value does not fit an int.
func wtoi(s string) int {
	s = strings.TrimLeft(s, " \t\n\v\f\r")
	neg := false
	if s != "" && (s[0] == '+' || s[0] == '-') {
		neg, s = s[0] == '-', s[1:]
	}
	var n int64
	for i := 0; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
		n = min(n*10+int64(s[i]-'0'), math.MaxInt32+1)
	}
	if neg {
		n = -n
	}
	return int(max(min(n, math.MaxInt32), math.MinInt32))
}
