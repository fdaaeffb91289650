metadata
    a	=	"tab"
    b ="vt"
    c= x
