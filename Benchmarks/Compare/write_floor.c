// The floor under any pub/sub server's CPU per delivery on this machine: one write() per
// subscriber per message to N loopback TCP sockets, read by another process (an epoll loop),
// and nothing else. Prints the writer's CPU time per delivered message (nearly all of it the
// kernel's: the program itself only loops over write()).
//
// With SYNC_FILE, each message is first made durable the way a broker must before it acks and
// fans out: written to that file (overwriting a preallocated 4 MiB, so the file never grows)
// and fdatasync'ed. That is the floor of a server that syncs each event and writes each
// notification to its own socket.
//
//   cc -O2 -o write_floor write_floor.c
//   ./write_floor SUBSCRIBERS RATE MESSAGE_BYTES [MESSAGES_PER_WRITE [SYNC_FILE]]
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>
#include <sys/socket.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
int main(int argc,char**argv){
 if(argc<4){fprintf(stderr,"usage: %s SUBSCRIBERS RATE MESSAGE_BYTES [MESSAGES_PER_WRITE [SYNC_FILE]]\n",argv[0]);return 2;}
 int N=atoi(argv[1]),RATE=atoi(argv[2]),MSG=atoi(argv[3]),PER=argc>4?atoi(argv[4]):1; double DUR=5;
 const long LOG=4<<20; int lf=-1; long lo=0;
 if(argc>5){ lf=open(argv[5],O_RDWR|O_CREAT|O_TRUNC,0600); if(lf<0){perror(argv[5]);return 2;}
  char *z=calloc(1,LOG); if(write(lf,z,LOG)!=LOG||fsync(lf)){perror("preallocate");return 2;} free(z); }
 int ls=socket(AF_INET,SOCK_STREAM,0); struct sockaddr_in a={0}; a.sin_family=AF_INET; a.sin_addr.s_addr=htonl(0x7f000001);
 bind(ls,(void*)&a,sizeof a); listen(ls,1024); socklen_t l=sizeof a; getsockname(ls,(void*)&a,&l);
 pid_t pid=fork();
 if(!pid){ int ep=epoll_create1(0);
  for(int i=0;i<N;i++){int c=socket(AF_INET,SOCK_STREAM,0);connect(c,(void*)&a,sizeof a);struct epoll_event e={.events=EPOLLIN,.data.fd=c};epoll_ctl(ep,EPOLL_CTL_ADD,c,&e);}
  char buf[65536]; long total=0; double end=now()+DUR+2; struct epoll_event ev[256];
  while(now()<end){int n=epoll_wait(ep,ev,256,200);for(int i=0;i<n;i++){long r=read(ev[i].data.fd,buf,sizeof buf);if(r>0)total+=r;}}
  struct rusage ru; getrusage(RUSAGE_SELF,&ru);
  fprintf(stderr,"reader got %ld bytes, reader cpu %.2fs\n",total,ru.ru_utime.tv_sec+ru.ru_utime.tv_usec*1e-6+ru.ru_stime.tv_sec+ru.ru_stime.tv_usec*1e-6); _exit(0);}
 int *ss=malloc(N*sizeof(int)); for(int i=0;i<N;i++){ss[i]=accept(ls,0,0);int one=1;setsockopt(ss[i],IPPROTO_TCP,TCP_NODELAY,&one,sizeof one);}
 usleep(300000); char *m=malloc(MSG*PER); memset(m,'x',MSG*PER);
 struct rusage r0,r1; getrusage(RUSAGE_SELF,&r0); double t0=now(),nx=t0; long n=0;
 while(now()-t0<DUR){
  if(lf>=0){ if(lo+MSG*PER>LOG)lo=0; pwrite(lf,m,MSG*PER,lo); lo+=MSG*PER; fdatasync(lf); }
  for(int i=0;i<N;i++){write(ss[i],m,MSG*PER); n+=PER;} nx+=(double)PER/RATE; double d=nx-now(); if(d>0)usleep(d*1e6);}
 getrusage(RUSAGE_SELF,&r1);
 double st=(r1.ru_stime.tv_sec-r0.ru_stime.tv_sec)+(r1.ru_stime.tv_usec-r0.ru_stime.tv_usec)*1e-6;
 double ut=(r1.ru_utime.tv_sec-r0.ru_utime.tv_sec)+(r1.ru_utime.tv_usec-r0.ru_utime.tv_usec)*1e-6;
 printf("N=%d rate=%d msg=%d per-write=%d%s: deliveries %ld, writer CPU %.2f us/delivery (user+system; this VM's tick accounting splits them unreliably)\n",N,RATE,MSG,PER,lf>=0?" fdatasync per message":"",n,(st+ut)/n*1e6); fflush(stdout);
 wait(0); if(lf>=0){close(lf); unlink(argv[5]);}}
